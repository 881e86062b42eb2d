package mgmt

import (
	"net/http"
	"strconv"

	"github.com/sluicehq/sluice/internal/oci"
)

// deleted serves the soft delete endpoints under /acr/v1/_deleted/.
func (h *Handler) deleted(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	if rt.arg == "_catalog" {
		if r.Method != "GET" {
			methodNotAllowed(w, "GET")
			return
		}
		repos, err := h.reg.DeletedRepositories(ctx)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]map[string]string, len(repos))
		for i, d := range repos {
			out[i] = map[string]string{"repository": d.Name, "createdAt": timestamp(d.CreatedAt), "deletedAt": timestamp(d.DeletedAt)}
		}
		writeJSON(w, http.StatusOK, map[string]any{"repositories": out})
		return
	}
	sub := parseRoute(rt.arg)
	if err := oci.ValidateName(sub.repo); err != nil {
		h.fail(w, r, err)
		return
	}
	switch {
	case sub.action == "_manifests" && sub.arg == "" && r.Method == "GET":
		ms, err := h.reg.DeletedManifests(ctx, sub.repo)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]map[string]string, len(ms))
		for i, d := range ms {
			out[i] = map[string]string{"digest": d.Digest, "createdAt": timestamp(d.CreatedAt), "deletedAt": timestamp(d.DeletedAt)}
		}
		writeJSON(w, http.StatusOK, map[string]any{"manifests": out})
	case sub.action == "_tags" && sub.arg == "" && r.Method == "GET":
		tags, err := h.reg.DeletedTags(ctx, sub.repo)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]map[string]string, len(tags))
		for i, d := range tags {
			out[i] = map[string]string{"name": d.Name, "digest": d.Digest, "deletedAt": timestamp(d.DeletedAt)}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tags": out})
	case sub.action == "_manifests" && sub.arg != "" && r.Method == "POST":
		h.restore(w, r, sub)
	case sub.action == "_manifests" || sub.action == "_tags":
		methodNotAllowed(w, "GET", "POST")
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	}
}

// restore serves POST /acr/v1/_deleted/{repo}/_manifests/{digest}?force=
// with an optional {"tag": ...} body.
func (h *Handler) restore(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(rt.arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var body struct {
		Tag string `json:"tag"`
	}
	if r.ContentLength != 0 {
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if err := h.reg.RestoreManifest(r.Context(), rt.repo, dgst, body.Tag, force); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"digest": dgst.String(), "tag": body.Tag})
}
