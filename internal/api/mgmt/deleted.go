package mgmt

import (
	"net/http"
	"strconv"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/oci"
)

// The soft delete endpoints under /acr/v1/_deleted/.

func (h *Handler) deletedRepositories(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	repos, err := h.reg.DeletedRepositories(r.Context())
	if err != nil {
		return err
	}
	out := make([]map[string]string, len(repos))
	for i, d := range repos {
		out[i] = map[string]string{"repository": d.Name, "createdAt": timestamp(d.CreatedAt), "deletedAt": timestamp(d.DeletedAt)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"repositories": out})
}

func (h *Handler) deletedManifests(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ms, err := h.reg.DeletedManifests(r.Context(), p[pRepo])
	if err != nil {
		return err
	}
	out := make([]map[string]string, len(ms))
	for i, d := range ms {
		out[i] = map[string]string{"digest": d.Digest, "createdAt": timestamp(d.CreatedAt), "deletedAt": timestamp(d.DeletedAt)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"manifests": out})
}

func (h *Handler) deletedTags(w http.ResponseWriter, r *http.Request, p route.Params) error {
	tags, err := h.reg.DeletedTags(r.Context(), p[pRepo])
	if err != nil {
		return err
	}
	out := make([]map[string]string, len(tags))
	for i, d := range tags {
		out[i] = map[string]string{"name": d.Name, "digest": d.Digest, "deletedAt": timestamp(d.DeletedAt)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tags": out})
}

// restore serves POST /acr/v1/_deleted/{repo}/_manifests/{digest}?force=
// with an optional {"tag": ...} body.
func (h *Handler) restore(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	var body struct {
		Tag string `json:"tag"`
	}
	if r.ContentLength != 0 {
		if err := readJSON(r, &body); err != nil {
			return err
		}
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if err := h.reg.RestoreManifest(r.Context(), p[pRepo], dgst, body.Tag, force); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"digest": dgst.String(), "tag": body.Tag})
}
