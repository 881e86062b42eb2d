package mgmt

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// repositoryAttributes are a repository's changeableAttributes, which add
// teleportEnabled (the legacy name of auto-streaming) to the common four.
type repositoryAttributes struct {
	metadata.Attributes
	TeleportEnabled bool `json:"teleportEnabled"`
}

type repositoryJSON struct {
	Registry             string               `json:"registry"`
	ImageName            string               `json:"imageName"`
	CreatedTime          string               `json:"createdTime"`
	LastUpdateTime       string               `json:"lastUpdateTime"`
	ManifestCount        int                  `json:"manifestCount"`
	TagCount             int                  `json:"tagCount"`
	Size                 int64                `json:"size"`
	ChangeableAttributes repositoryAttributes `json:"changeableAttributes"`
	// Streaming is the repository's auto-streaming setting.
	Streaming streamingSettings `json:"streaming"`
}

func toRepositoryJSON(r *http.Request, repo *metadata.Repository) repositoryJSON {
	return repositoryJSON{
		Registry: registryName(r), ImageName: repo.Name,
		CreatedTime: timestamp(repo.CreatedAt), LastUpdateTime: timestamp(repo.UpdatedAt),
		ManifestCount: repo.ManifestCount, TagCount: repo.TagCount, Size: repo.Size,
		ChangeableAttributes: repositoryAttributes{Attributes: repo.Attributes, TeleportEnabled: repo.Streaming},
		Streaming:            settingsJSON(repo.Streaming),
	}
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route) {
	n, last, err := pageOf(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	repos, more, err := h.reg.ReadableRepositories(r.Context(), last, n, auth.CallerFrom(r.Context()).MayRead)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if more && len(repos) > 0 {
		setNextLink(w, "/acr/v1/_catalog", n, repos[len(repos)-1])
	}
	writeJSON(w, http.StatusOK, map[string]any{"repositories": repos})
}

// repositoryPatch is the body of PATCH /acr/v1/{repo}: any subset of the
// changeable attributes, at the top level or under changeableAttributes.
type repositoryPatch struct {
	metadata.AttributesPatch
	TeleportEnabled      *bool                     `json:"teleportEnabled,omitempty"`
	ChangeableAttributes *repositoryAttributePatch `json:"changeableAttributes,omitempty"`
}

type repositoryAttributePatch struct {
	metadata.AttributesPatch
	TeleportEnabled *bool `json:"teleportEnabled,omitempty"`
}

func (h *Handler) repository(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	switch r.Method {
	case "GET":
		repo, err := h.reg.Repository(ctx, rt.repo)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, toRepositoryJSON(r, repo))
	case "PATCH":
		var body repositoryPatch
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		p := metadata.RepositoryPatch{Attributes: body.AttributesPatch, Streaming: body.TeleportEnabled}
		if c := body.ChangeableAttributes; c != nil {
			p.Attributes = mergePatch(p.Attributes, c.AttributesPatch)
			if c.TeleportEnabled != nil {
				p.Streaming = c.TeleportEnabled
			}
		}
		if _, err := h.reg.Repository(ctx, rt.repo); err != nil {
			h.fail(w, r, err)
			return
		}
		repo, err := h.reg.UpdateRepository(ctx, rt.repo, p)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if p.Streaming != nil && *p.Streaming {
			h.conv.Enqueued()
		}
		writeJSON(w, http.StatusOK, toRepositoryJSON(r, repo))
	case "DELETE":
		tags, _, err := h.reg.TagInfos(ctx, rt.repo, "", "", -1)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		deleted, err := h.reg.DeleteRepository(ctx, rt.repo)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		names := make([]string, len(tags))
		for i, t := range tags {
			names[i] = t.Name
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"manifestsDeleted": nonNil(deleted), "tagsDeleted": names})
	default:
		methodNotAllowed(w, "GET", "PATCH", "DELETE")
	}
}

func mergePatch(a, b metadata.AttributesPatch) metadata.AttributesPatch {
	if b.DeleteEnabled != nil {
		a.DeleteEnabled = b.DeleteEnabled
	}
	if b.WriteEnabled != nil {
		a.WriteEnabled = b.WriteEnabled
	}
	if b.ReadEnabled != nil {
		a.ReadEnabled = b.ReadEnabled
	}
	if b.ListEnabled != nil {
		a.ListEnabled = b.ListEnabled
	}
	return a
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type tagJSON struct {
	Name                 string              `json:"name"`
	Digest               string              `json:"digest"`
	CreatedTime          string              `json:"createdTime"`
	LastUpdateTime       string              `json:"lastUpdateTime"`
	Signed               bool                `json:"signed"`
	ChangeableAttributes metadata.Attributes `json:"changeableAttributes"`
}

func toTagJSON(t metadata.TagInfo) tagJSON {
	return tagJSON{Name: t.Name, Digest: t.Digest, CreatedTime: timestamp(t.CreatedAt), LastUpdateTime: timestamp(t.UpdatedAt), ChangeableAttributes: t.Attributes}
}

// attributesBody is the body of a tag or manifest PATCH: the attributes at
// the top level or under changeableAttributes.
type attributesBody struct {
	metadata.AttributesPatch
	ChangeableAttributes *metadata.AttributesPatch `json:"changeableAttributes,omitempty"`
}

func (b attributesBody) patch() metadata.AttributesPatch {
	if b.ChangeableAttributes != nil {
		return mergePatch(b.AttributesPatch, *b.ChangeableAttributes)
	}
	return b.AttributesPatch
}

// attributed is an endpoint of things with changeable attributes, tags or
// manifests: listed a page at a time, shown, patched, deleted.
type attributed[T, J any] struct {
	action           string // _tags, _manifests
	listKey, itemKey string // their keys in the answer
	infos            func(ctx context.Context, repo, name, last string, n int) ([]T, bool, error)
	toJSON           func(T) J
	name             func(T) string
	update           func(ctx context.Context, repo, name string, p metadata.AttributesPatch) error
}

// list serves a page of them.
func (a attributed[T, J]) list(h *Handler, w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != "GET" {
		methodNotAllowed(w, "GET")
		return
	}
	n, last, err := pageOf(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items, more, err := a.infos(r.Context(), rt.repo, "", last, n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]J, len(items))
	for i, it := range items {
		out[i] = a.toJSON(it)
	}
	if more && len(items) > 0 {
		setNextLink(w, "/acr/v1/"+rt.repo+"/"+a.action, n, a.name(items[len(items)-1]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"registry": registryName(r), "imageName": rt.repo, a.listKey: out})
}

// one shows, patches (then shows) or deletes the one named, which ref
// points at.
func (a attributed[T, J]) one(h *Handler, w http.ResponseWriter, r *http.Request, rt route, name string, ref oci.Reference) {
	ctx := r.Context()
	switch r.Method {
	case "GET", "PATCH":
		if r.Method == "PATCH" {
			var body attributesBody
			if err := readJSON(r, &body); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := a.update(ctx, rt.repo, name, body.patch()); err != nil {
				h.fail(w, r, err)
				return
			}
		}
		items, _, err := a.infos(ctx, rt.repo, name, "", 1)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"registry": registryName(r), "imageName": rt.repo, a.itemKey: a.toJSON(items[0])})
	case "DELETE":
		if err := h.reg.DeleteManifest(ctx, rt.repo, ref); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		methodNotAllowed(w, "GET", "PATCH", "DELETE")
	}
}

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, rt route) {
	a := attributed[metadata.TagInfo, tagJSON]{action: "_tags", listKey: "tags", itemKey: "tag",
		infos: h.reg.TagInfos, toJSON: toTagJSON, name: func(t metadata.TagInfo) string { return t.Name }, update: h.reg.UpdateTagAttributes}
	if rt.arg == "" {
		a.list(h, w, r, rt)
		return
	}
	if err := oci.ValidateTag(rt.arg); err != nil {
		h.fail(w, r, err)
		return
	}
	a.one(h, w, r, rt, rt.arg, oci.Reference{Tag: rt.arg})
}

type manifestJSON struct {
	Digest               string              `json:"digest"`
	ImageSize            int64               `json:"imageSize"`
	CreatedTime          string              `json:"createdTime"`
	LastUpdateTime       string              `json:"lastUpdateTime"`
	Architecture         string              `json:"architecture,omitempty"`
	OS                   string              `json:"os,omitempty"`
	MediaType            string              `json:"mediaType"`
	ConfigMediaType      string              `json:"configMediaType,omitempty"`
	ArtifactType         string              `json:"artifactType,omitempty"`
	Subject              string              `json:"subject,omitempty"`
	Tags                 []string            `json:"tags"`
	ChangeableAttributes metadata.Attributes `json:"changeableAttributes"`
}

func toManifestJSON(m metadata.ManifestInfo) manifestJSON {
	return manifestJSON{Digest: m.Digest, ImageSize: m.ImageSize, CreatedTime: timestamp(m.CreatedAt), LastUpdateTime: timestamp(m.UpdatedAt),
		Architecture: m.Architecture, OS: m.OS, MediaType: m.MediaType, ConfigMediaType: m.ConfigMediaType, ArtifactType: m.ArtifactType,
		Subject: m.Subject, Tags: m.Tags, ChangeableAttributes: m.Attributes}
}

func (h *Handler) manifests(w http.ResponseWriter, r *http.Request, rt route) {
	a := attributed[metadata.ManifestInfo, manifestJSON]{action: "_manifests", listKey: "manifests", itemKey: "manifest",
		infos: h.reg.ManifestInfos, toJSON: toManifestJSON, name: func(m metadata.ManifestInfo) string { return m.Digest }, update: h.reg.UpdateManifestAttributes}
	if rt.arg == "" {
		a.list(h, w, r, rt)
		return
	}
	dgst, err := h.digestOrTag(r, rt.repo, rt.arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	a.one(h, w, r, rt, dgst.String(), oci.Reference{Digest: dgst.String()})
}

// digestOrTag resolves a manifest reference given as a digest or a tag.
func (h *Handler) digestOrTag(r *http.Request, repo, ref string) (digest.Digest, error) {
	parsed, err := oci.ParseReference(ref)
	if err != nil {
		return "", err
	}
	if parsed.IsDigest() {
		return digest.Digest(parsed.Digest), nil
	}
	m, err := h.reg.GetManifest(r.Context(), repo, parsed, false)
	if err != nil {
		return "", err
	}
	return m.Digest, nil
}

func (h *Handler) usage(w http.ResponseWriter, r *http.Request, _ route) {
	size, err := h.reg.TotalSize(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": []map[string]any{
		{"name": "Size", "limit": h.opts.IncludedStorage, "currentValue": size, "unit": "Bytes"},
	}})
}

// keys publishes the public keys that streaming artifacts are signed with,
// as a JWKS (RFC 7517), to anyone: nodes verify artifacts with them, and
// pin them the first time they stream from the registry.
func (h *Handler) keys(w http.ResponseWriter, r *http.Request, _ route) {
	if h.opts.Keys == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "this registry publishes no signing keys")
		return
	}
	set, err := h.opts.Keys.JWKS()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "max-age=60")
	writeJSON(w, http.StatusOK, set)
}
