package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/streaming"
)

// pageSize is how many rows a list shows before "Next".
const pageSize = 50

// overviewData is the overview's.
type overviewData struct {
	// Usage is shown to the admin only (the usage API is admin's).
	Used, Included int64
	// High is where the usage bar turns to a warning: 90% of included.
	High     int64
	Largest  []metadata.RepositorySize
	Running  []*metadata.Operation
	Failures []*metadata.Operation
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	ctx := r.Context()
	caller := auth.CallerFrom(ctx)
	d := overviewData{Included: h.opts.IncludedStorage, High: h.opts.IncludedStorage / 10 * 9}
	if caller.Identity.IsAdmin() {
		used, err := h.reg.TotalSize(ctx)
		if err != nil {
			return err
		}
		d.Used = used
	}
	largest, err := h.reg.LargestRepositories(ctx, 200)
	if err != nil {
		return err
	}
	for _, l := range largest {
		if len(d.Largest) < 8 && caller.MayRead(l.Name) {
			d.Largest = append(d.Largest, l)
		}
	}
	visible := operationVisible(caller)
	if d.Running, _, err = h.conv.List(ctx, metadata.OperationFilter{Status: metadata.StatusRunning}, "", 10, visible); err != nil {
		return err
	}
	queued, _, err := h.conv.List(ctx, metadata.OperationFilter{Status: metadata.StatusNotStarted}, "", 10, visible)
	if err != nil {
		return err
	}
	d.Running = append(d.Running, queued...)
	if d.Failures, _, err = h.conv.List(ctx, metadata.OperationFilter{Status: metadata.StatusFailed}, "", 5, visible); err != nil {
		return err
	}
	live := 0
	if len(d.Running) > 0 {
		live = 2
	}
	return h.render(w, r, "overview", &page{Title: "Overview", Nav: "overview", Live: live, Data: d})
}

// operationVisible is which operations a caller sees, as the API lists
// them: those of repositories whose metadata it may read, and the imports
// it may push the target of.
func operationVisible(caller *auth.Caller) func(*metadata.Operation) bool {
	return func(op *metadata.Operation) bool {
		return caller.Can(op.Repository, auth.ActionMetadataRead) ||
			(op.Kind == conversion.KindImport && caller.Can(op.Repository, auth.ActionPush))
	}
}

// repositoriesData is the repository list's.
type repositoriesData struct {
	Query string
	Repos []metadata.Repository
	// Next is the query of the next page, "" on the last.
	Next string
}

func (h *Handler) repositories(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	ctx := r.Context()
	q := r.URL.Query()
	query, last := strings.TrimSpace(q.Get("q")), q.Get("last")
	repos, more, err := h.reg.SearchRepositories(ctx, query, last, pageSize, auth.CallerFrom(ctx).MayRead)
	if err != nil {
		return err
	}
	d := repositoriesData{Query: query, Repos: repos}
	if more && len(repos) > 0 {
		d.Next = "?" + url.Values{"q": {query}, "last": {repos[len(repos)-1].Name}}.Encode()
	}
	return h.render(w, r, "repositories", &page{Title: "Repositories", Nav: "repositories", Data: d})
}

// imageRow is a tag or a manifest in the repository page's list.
type imageRow struct {
	Tag       string
	Digest    string
	MediaType string
	Platform  string
	Size      int64
	Pushed    time.Time
	// State is the streaming artifact's: ready, converting, failed, none.
	State string
	// Artifact marks a referrer (a signature, a streaming artifact).
	Artifact string
}

// repositoryData is the repository page's.
type repositoryData struct {
	Repo    *metadata.Repository
	View    string // tags or manifests
	Query   string
	Rows    []imageRow
	Next    string
	Deleted []metadata.Deleted
	Expiry  time.Duration
}

func (h *Handler) repository(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	name := p[pRepo]
	repo, err := h.reg.Repository(ctx, name)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	d := repositoryData{Repo: repo, View: q.Get("view"), Query: strings.TrimSpace(q.Get("q")), Expiry: h.opts.SoftDelete}
	last := q.Get("last")
	var more bool
	switch d.View {
	case "manifests":
		d.Rows, more, err = h.manifestRows(ctx, name, last)
	default:
		d.View = "tags"
		d.Rows, more, err = h.tagRows(ctx, name, d.Query, last)
	}
	if err != nil {
		return err
	}
	if more && len(d.Rows) > 0 {
		lastRow := d.Rows[len(d.Rows)-1]
		key := lastRow.Tag
		if d.View == "manifests" {
			key = lastRow.Digest
		}
		d.Next = "?" + url.Values{"view": {d.View}, "q": {d.Query}, "last": {key}}.Encode()
	}
	if err := h.fillStates(ctx, name, d.Rows); err != nil {
		return err
	}
	if d.Deleted, err = h.reg.DeletedManifests(ctx, name); err != nil {
		return err
	}
	return h.render(w, r, "repository", &page{Title: name, Nav: "repositories", Live: 3, Data: d})
}

// tagRows lists a page of tags whose name contains query, with their
// manifests.
func (h *Handler) tagRows(ctx context.Context, repo, query, last string) ([]imageRow, bool, error) {
	var rows []imageRow
	for {
		tags, more, err := h.reg.TagInfos(ctx, repo, "", last, 500)
		if err != nil {
			return nil, false, err
		}
		for _, t := range tags {
			if query != "" && !strings.Contains(strings.ToLower(t.Name), strings.ToLower(query)) {
				continue
			}
			if len(rows) == pageSize {
				return h.withManifests(ctx, repo, rows, true)
			}
			rows = append(rows, imageRow{Tag: t.Name, Digest: t.Digest, Pushed: t.UpdatedAt})
		}
		if !more || len(tags) == 0 {
			return h.withManifests(ctx, repo, rows, false)
		}
		last = tags[len(tags)-1].Name
	}
}

// withManifests fills the rows' manifest columns.
func (h *Handler) withManifests(ctx context.Context, repo string, rows []imageRow, more bool) ([]imageRow, bool, error) {
	infos := map[string]metadata.ManifestInfo{}
	for i := range rows {
		info, ok := infos[rows[i].Digest]
		if !ok {
			ms, _, err := h.reg.ManifestInfos(ctx, repo, rows[i].Digest, "", 1)
			if errors.Is(err, registry.ErrManifestUnknown) {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			info = ms[0]
			infos[rows[i].Digest] = info
		}
		fillRow(&rows[i], info)
	}
	return rows, more, nil
}

func fillRow(row *imageRow, info metadata.ManifestInfo) {
	row.MediaType, row.Size = info.MediaType, info.ImageSize
	row.Platform = platformOf(info.MediaType, info.OS, info.Architecture)
	if info.Subject != "" {
		row.Artifact = info.ArtifactType
	}
}

// platformOf describes a manifest's platform.
func platformOf(mediaType, os, arch string) string {
	switch {
	case mediaType == ocispec.MediaTypeImageIndex || mediaType == oci.MediaTypeDockerManifestList:
		return "multi-platform"
	case os == "" && arch == "":
		return "—"
	}
	return os + "/" + arch
}

// manifestRows lists a page of the repository's manifests by digest.
func (h *Handler) manifestRows(ctx context.Context, repo, last string) ([]imageRow, bool, error) {
	ms, more, err := h.reg.ManifestInfos(ctx, repo, "", last, pageSize)
	if err != nil {
		return nil, false, err
	}
	rows := make([]imageRow, len(ms))
	for i, m := range ms {
		rows[i] = imageRow{Digest: m.Digest, Pushed: m.CreatedAt, Tag: strings.Join(m.Tags, ", ")}
		fillRow(&rows[i], m)
	}
	return rows, more, nil
}

// fillStates sets the streaming state of the rows that are images.
func (h *Handler) fillStates(ctx context.Context, repo string, rows []imageRow) error {
	var digests []string
	for _, row := range rows {
		if row.Artifact == "" && row.MediaType != "" {
			digests = append(digests, row.Digest)
		}
	}
	states, err := h.conv.States(ctx, repo, digests)
	if err != nil {
		return err
	}
	for i := range rows {
		rows[i].State = states[rows[i].Digest]
	}
	return nil
}

// imageData is the image page's.
type imageData struct {
	Repo      string
	Digest    string
	Tags      []string
	MediaType string
	Platform  string
	Size      int64
	Created   time.Time
	// Platforms are an index's manifests.
	Platforms []platformRow
	Layers    []ocispec.Descriptor
	Config    *ocispec.Descriptor
	Referrers []referrerRow
	State     string
	// Operation is the image's latest conversion, nil when it had none.
	Operation *metadata.Operation
	Profiles  []profileRow
	// Artifact marks a referrer: it cannot be converted.
	Artifact string
	Subject  string
	Host     string
	Tab      string
}

type platformRow struct {
	Digest   string
	Platform string
	Size     int64
}

type referrerRow struct {
	ocispec.Descriptor
	Created string
	// Streaming marks a streaming artifact.
	Streaming bool
}

// profileRow is a streaming layer and what nodes recorded of how it starts.
type profileRow struct {
	Artifact string
	Layer    string
	Recorded bool // a profile, recorded or inferred
	Inferred bool
	Ranges   int
	Bytes    int64
	Updated  time.Time
}

func (h *Handler) image(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	repo := p[pRepo]
	dgst, err := digest.Parse(p[pDigest])
	if err != nil {
		return badRequest("%q is not a digest", p[pDigest])
	}
	m, err := h.reg.GetManifest(ctx, repo, oci.Reference{Digest: dgst.String()}, true)
	if err != nil {
		return err
	}
	infos, _, err := h.reg.ManifestInfos(ctx, repo, dgst.String(), "", 1)
	if err != nil {
		return err
	}
	info := infos[0]
	d := imageData{Repo: repo, Digest: dgst.String(), Tags: info.Tags, MediaType: m.MediaType, Size: info.ImageSize, Created: info.CreatedAt,
		Platform: platformOf(m.MediaType, m.OS, m.Architecture), Host: r.Host, Tab: r.URL.Query().Get("tab")}
	if m.Subject != "" {
		d.Artifact, d.Subject = m.ArtifactType, m.Subject.String()
	}
	if parsed, err := oci.ParseManifest(m.MediaType, m.Payload); err == nil {
		d.Layers, d.Config = parsed.Layers, parsed.Config
		for _, c := range parsed.Manifests {
			row := platformRow{Digest: c.Digest.String(), Size: c.Size}
			if c.Platform != nil {
				row.Platform = c.Platform.OS + "/" + c.Platform.Architecture
				if c.Platform.Variant != "" {
					row.Platform += "/" + c.Platform.Variant
				}
			}
			d.Platforms = append(d.Platforms, row)
		}
	}
	refs, err := h.reg.Referrers(ctx, repo, dgst, "")
	if err != nil {
		return err
	}
	for _, ref := range refs {
		row := referrerRow{Descriptor: ref, Streaming: ref.ArtifactType == streaming.ArtifactType}
		row.Created = ref.Annotations[ocispec.AnnotationCreated]
		d.Referrers = append(d.Referrers, row)
	}
	if d.Artifact == "" {
		states, err := h.conv.States(ctx, repo, []string{d.Digest})
		if err != nil {
			return err
		}
		d.State = states[d.Digest]
		d.Operation, err = h.conv.Latest(ctx, repo, dgst)
		if err != nil && !isUnknownOperation(err) {
			return err
		}
		if d.Profiles, err = h.profiles(ctx, repo, refs); err != nil {
			return err
		}
	}
	live := 0
	if d.State == conversion.StateConverting {
		live = 1
	}
	title := repo + "@" + shortDigest(d.Digest)
	if len(d.Tags) > 0 {
		title = repo + ":" + d.Tags[0]
	}
	return h.render(w, r, "image", &page{Title: title, Nav: "repositories", Live: live, Data: d})
}

func isUnknownOperation(err error) bool {
	var ce *conversion.Error
	return errors.As(err, &ce) && ce.Code == conversion.CodeOperationUnknown
}

// profiles lists the layers of an image's streaming artifacts with their
// startup profiles.
func (h *Handler) profiles(ctx context.Context, repo string, refs []ocispec.Descriptor) ([]profileRow, error) {
	var out []profileRow
	for _, ref := range refs {
		if ref.ArtifactType != streaming.ArtifactType {
			continue
		}
		am, err := h.reg.GetManifest(ctx, repo, oci.Reference{Digest: ref.Digest.String()}, true)
		if err != nil {
			continue // deleted meanwhile
		}
		parsed, err := oci.ParseManifest(am.MediaType, am.Payload)
		if err != nil {
			continue
		}
		for _, l := range parsed.Layers {
			row := profileRow{Artifact: ref.Digest.String(), Layer: l.Digest.String()}
			prof, err := h.reg.StartupProfile(ctx, repo, l.Digest)
			switch {
			case err == nil:
				row.Recorded, row.Inferred, row.Ranges, row.Updated = true, prof.Inferred, len(prof.Ranges), prof.Updated
				for _, rg := range prof.Ranges {
					row.Bytes += rg.Length
				}
			case !errors.Is(err, registry.ErrProfileUnknown) && !errors.Is(err, registry.ErrBlobUnknown):
				return nil, err
			}
			out = append(out, row)
		}
	}
	return out, nil
}

// operationsData is the operations page's.
type operationsData struct {
	Status, Repository string
	Statuses           []string
	Ops                []*metadata.Operation
	Next               string
}

var statuses = []string{metadata.StatusNotStarted, metadata.StatusRunning, metadata.StatusSucceeded, metadata.StatusFailed, metadata.StatusCanceled}

func (h *Handler) operations(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	ctx := r.Context()
	q := r.URL.Query()
	f := metadata.OperationFilter{Status: q.Get("status"), Repository: strings.TrimSpace(q.Get("repository"))}
	if f.Status != "" && !slices.Contains(statuses, f.Status) {
		return badRequest("Unknown status %q: use one of %s.", f.Status, strings.Join(statuses, ", "))
	}
	ops, more, err := h.conv.List(ctx, f, q.Get("last"), pageSize, operationVisible(auth.CallerFrom(ctx)))
	if errors.Is(err, metadata.ErrNotFound) {
		return badRequest("The page to continue from is gone; start again from the first page.")
	}
	if err != nil {
		return err
	}
	d := operationsData{Status: f.Status, Repository: f.Repository, Statuses: statuses, Ops: ops}
	if more && len(ops) > 0 {
		d.Next = "?" + url.Values{"status": {f.Status}, "repository": {f.Repository}, "last": {ops[len(ops)-1].ID}}.Encode()
	}
	live := 0
	for _, op := range ops {
		if op.Active() {
			live = 2
		}
	}
	return h.render(w, r, "operations", &page{Title: "Operations", Nav: "operations", Live: live, Data: d})
}

// deletedData is the page of soft-deleted images.
type deletedData struct {
	Rows  []metadata.Deleted // Name is the repository's
	Repos []metadata.Deleted // deleted repositories (admin)
	// Expiry is how long deleted images stay restorable.
	Expiry    time.Duration
	Retention string
}

// deleted lists the soft-deleted images of the repositories the caller
// may read, newest first.
func (h *Handler) deleted(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	ctx := r.Context()
	caller := auth.CallerFrom(ctx)
	d := deletedData{Expiry: h.opts.SoftDelete, Retention: days(h.opts.SoftDelete)}
	var err error
	if d.Rows, err = h.reg.DeletedImages(ctx, 500, caller.MayRead); err != nil {
		return err
	}
	if caller.Identity.IsAdmin() {
		repos, err := h.reg.DeletedRepositories(ctx)
		if err != nil {
			return err
		}
		d.Repos = repos
	}
	return h.render(w, r, "deleted", &page{Title: "Deleted", Nav: "deleted", Data: d})
}

// accessData is the access page's.
type accessData struct {
	Tokens    []*auth.TokenInfo
	ScopeMaps []metadata.ScopeMap
	// Created is a token just created or given new passwords, whose
	// values are shown this once.
	Created *auth.TokenInfo
}

func (h *Handler) access(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	return h.renderAccess(w, r, nil)
}

func (h *Handler) renderAccess(w http.ResponseWriter, r *http.Request, created *auth.TokenInfo) error {
	if h.auth == nil {
		return &userError{status: http.StatusNotFound, msg: "Authentication is turned off (auth.enabled: false): there are no tokens or scope maps."}
	}
	ctx := r.Context()
	tokens, err := h.auth.ListTokens(ctx)
	if err != nil {
		return err
	}
	maps, err := h.auth.ListScopeMaps(ctx)
	if err != nil {
		return err
	}
	return h.render(w, r, "access", &page{Title: "Access", Nav: "access", Data: accessData{Tokens: tokens, ScopeMaps: maps, Created: created}})
}

// days writes a retention in days.
func days(d time.Duration) string {
	n := int(d.Hours() / 24)
	if n == 1 {
		return "1 day"
	}
	return strconv.Itoa(n) + " days"
}
