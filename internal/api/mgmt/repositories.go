package mgmt

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// repositoryAttributes are a repository's changeableAttributes, which add
// teleportEnabled (the legacy name of auto-streaming) to the common four.
type repositoryAttributes struct {
	attributesJSON
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
		ChangeableAttributes: repositoryAttributes{attributesJSON: toAttributesJSON(repo.Attributes), TeleportEnabled: repo.Streaming},
		Streaming:            settingsJSON(repo.Streaming),
	}
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	mayRead := auth.CallerFrom(r.Context()).MayRead
	return wire.Names(w, r, "/acr/v1/_catalog", "repositories", 100, 1000, nil, func(last string, n int) ([]string, bool, error) {
		return h.reg.ReadableRepositories(r.Context(), last, n, mayRead)
	})
}

// repositoryPatch is the body of PATCH /acr/v1/{repo}: any subset of the
// changeable attributes, at the top level or under changeableAttributes.
type repositoryPatch struct {
	attributesPatchJSON
	TeleportEnabled      *bool                     `json:"teleportEnabled,omitempty"`
	ChangeableAttributes *repositoryAttributePatch `json:"changeableAttributes,omitempty"`
}

type repositoryAttributePatch struct {
	attributesPatchJSON
	TeleportEnabled *bool `json:"teleportEnabled,omitempty"`
}

func (h *Handler) showRepository(w http.ResponseWriter, r *http.Request, p route.Params) error {
	repo, err := h.reg.Repository(r.Context(), p[pRepo])
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toRepositoryJSON(r, repo))
}

func (h *Handler) updateRepository(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	var body repositoryPatch
	if err := readJSON(r, &body); err != nil {
		return err
	}
	patch := metadata.RepositoryPatch{Attributes: body.attributesPatchJSON.patch(nil), Streaming: body.TeleportEnabled}
	if c := body.ChangeableAttributes; c != nil {
		patch.Attributes = body.attributesPatchJSON.patch(&c.attributesPatchJSON)
		if c.TeleportEnabled != nil {
			patch.Streaming = c.TeleportEnabled
		}
	}
	if _, err := h.reg.Repository(ctx, p[pRepo]); err != nil {
		return err
	}
	repo, err := h.reg.UpdateRepository(ctx, p[pRepo], patch)
	if err != nil {
		return err
	}
	if patch.Streaming != nil && *patch.Streaming {
		h.conv.Enqueued()
	}
	return writeJSON(w, http.StatusOK, toRepositoryJSON(r, repo))
}

func (h *Handler) deleteRepository(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	tags, _, err := h.reg.TagInfos(ctx, p[pRepo], "", "", -1)
	if err != nil {
		return err
	}
	deleted, err := h.reg.DeleteRepository(ctx, p[pRepo])
	if err != nil {
		return err
	}
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.Name
	}
	return writeJSON(w, http.StatusAccepted, map[string]any{"manifestsDeleted": nonNil(deleted), "tagsDeleted": names})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type tagJSON struct {
	Name                 string         `json:"name"`
	Digest               string         `json:"digest"`
	CreatedTime          string         `json:"createdTime"`
	LastUpdateTime       string         `json:"lastUpdateTime"`
	Signed               bool           `json:"signed"`
	ChangeableAttributes attributesJSON `json:"changeableAttributes"`
}

func toTagJSON(t metadata.TagInfo) tagJSON {
	return tagJSON{Name: t.Name, Digest: t.Digest, CreatedTime: timestamp(t.CreatedAt), LastUpdateTime: timestamp(t.UpdatedAt), ChangeableAttributes: toAttributesJSON(t.Attributes)}
}

// attributesBody is the body of a tag or manifest PATCH: the attributes at
// the top level or under changeableAttributes.
type attributesBody struct {
	attributesPatchJSON
	ChangeableAttributes *attributesPatchJSON `json:"changeableAttributes,omitempty"`
}

func (b attributesBody) patch() metadata.AttributesPatch {
	return b.attributesPatchJSON.patch(b.ChangeableAttributes)
}

// attributed is an endpoint of things with changeable attributes, tags or
// manifests: listed a page at a time, shown, patched, deleted.
type attributed[T, J any] struct {
	h                *Handler
	action           string // _tags, _manifests
	listKey, itemKey string // their keys in the answer
	infos            func(ctx context.Context, repo, name, last string, n int) ([]T, bool, error)
	toJSON           func(T) J
	name             func(T) string
	update           func(ctx context.Context, repo, name string, p metadata.AttributesPatch) error
	// resolve names the one a request is about and the reference a delete
	// removes.
	resolve func(r *http.Request, p route.Params) (string, oci.Reference, error)
}

// list serves a page of them.
func (a attributed[T, J]) list(w http.ResponseWriter, r *http.Request, p route.Params) error {
	n, last, err := pageOf(r)
	if err != nil {
		return err
	}
	items, more, err := a.infos(r.Context(), p[pRepo], "", last, n)
	if err != nil {
		return err
	}
	out := make([]J, len(items))
	for i, it := range items {
		out[i] = a.toJSON(it)
	}
	if more && len(items) > 0 {
		wire.NextLink(w, "/acr/v1/"+p[pRepo]+"/"+a.action, n, a.name(items[len(items)-1]))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"registry": registryName(r), "imageName": p[pRepo], a.listKey: out})
}

// show serves the one named.
func (a attributed[T, J]) show(w http.ResponseWriter, r *http.Request, p route.Params) error {
	name, _, err := a.resolve(r, p)
	if err != nil {
		return err
	}
	return a.showNamed(w, r, p, name)
}

// showNamed serves the one named name, resolved already.
func (a attributed[T, J]) showNamed(w http.ResponseWriter, r *http.Request, p route.Params, name string) error {
	items, _, err := a.infos(r.Context(), p[pRepo], name, "", 1)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"registry": registryName(r), "imageName": p[pRepo], a.itemKey: a.toJSON(items[0])})
}

// patch changes the attributes of the one named, then shows it.
func (a attributed[T, J]) patch(w http.ResponseWriter, r *http.Request, p route.Params) error {
	name, _, err := a.resolve(r, p)
	if err != nil {
		return err
	}
	var body attributesBody
	if err := readJSON(r, &body); err != nil {
		return err
	}
	if err := a.update(r.Context(), p[pRepo], name, body.patch()); err != nil {
		return err
	}
	return a.showNamed(w, r, p, name)
}

// delete deletes the one named (a tag's manifest, as the managed service
// does).
func (a attributed[T, J]) delete(w http.ResponseWriter, r *http.Request, p route.Params) error {
	_, ref, err := a.resolve(r, p)
	if err != nil {
		return err
	}
	if err := a.h.reg.DeleteManifest(r.Context(), p[pRepo], ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (h *Handler) tags() attributed[metadata.TagInfo, tagJSON] {
	return attributed[metadata.TagInfo, tagJSON]{h: h, action: "_tags", listKey: "tags", itemKey: "tag",
		infos: h.reg.TagInfos, toJSON: toTagJSON, name: func(t metadata.TagInfo) string { return t.Name }, update: h.reg.UpdateTagAttributes,
		resolve: func(_ *http.Request, p route.Params) (string, oci.Reference, error) {
			if err := oci.ValidateTag(p[pTag]); err != nil {
				return "", oci.Reference{}, err
			}
			return p[pTag], oci.Reference{Tag: p[pTag]}, nil
		}}
}

type manifestJSON struct {
	Digest               string         `json:"digest"`
	ImageSize            int64          `json:"imageSize"`
	CreatedTime          string         `json:"createdTime"`
	LastUpdateTime       string         `json:"lastUpdateTime"`
	Architecture         string         `json:"architecture,omitempty"`
	OS                   string         `json:"os,omitempty"`
	MediaType            string         `json:"mediaType"`
	ConfigMediaType      string         `json:"configMediaType,omitempty"`
	ArtifactType         string         `json:"artifactType,omitempty"`
	Subject              string         `json:"subject,omitempty"`
	Tags                 []string       `json:"tags"`
	ChangeableAttributes attributesJSON `json:"changeableAttributes"`
}

func toManifestJSON(m metadata.ManifestInfo) manifestJSON {
	return manifestJSON{Digest: m.Digest, ImageSize: m.ImageSize, CreatedTime: timestamp(m.CreatedAt), LastUpdateTime: timestamp(m.UpdatedAt),
		Architecture: m.Architecture, OS: m.OS, MediaType: m.MediaType, ConfigMediaType: m.ConfigMediaType, ArtifactType: m.ArtifactType,
		Subject: m.Subject, Tags: m.Tags, ChangeableAttributes: toAttributesJSON(m.Attributes)}
}

func (h *Handler) manifests() attributed[metadata.ManifestInfo, manifestJSON] {
	return attributed[metadata.ManifestInfo, manifestJSON]{h: h, action: "_manifests", listKey: "manifests", itemKey: "manifest",
		infos: h.reg.ManifestInfos, toJSON: toManifestJSON, name: func(m metadata.ManifestInfo) string { return m.Digest }, update: h.reg.UpdateManifestAttributes,
		resolve: func(r *http.Request, p route.Params) (string, oci.Reference, error) {
			dgst, err := h.digestOrTag(r, p[pRepo], p[pRef])
			return dgst.String(), oci.Reference{Digest: dgst.String()}, err
		}}
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

func (h *Handler) usage(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	size, err := h.reg.TotalSize(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"value": []map[string]any{
		{"name": "Size", "limit": h.opts.IncludedStorage, "currentValue": size, "unit": "Bytes"},
	}})
}

// keys publishes the public keys that streaming artifacts are signed with,
// as a JWKS (RFC 7517), to anyone: nodes verify artifacts with them, and
// pin them the first time they stream from the registry.
func (h *Handler) keys(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if h.opts.Keys == nil {
		return errNoKeys
	}
	set, err := h.opts.Keys.JWKS()
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "max-age=60")
	return writeJSON(w, http.StatusOK, set)
}
