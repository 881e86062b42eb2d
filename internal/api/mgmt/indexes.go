package mgmt

import (
	"net/http"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/oci"
)

// indexesJSON answers /acr/v1/{repo}/_indexes/{digest}.
type indexesJSON struct {
	Digest  string   `json:"digest"`
	Indexes []string `json:"indexes"`
}

// getIndexes lists the image indexes of a repository that list a manifest:
// a node that pulls one platform's manifest by digest finds through them
// the streaming artifacts made for its platform (they have the index as
// subject). Nodes hold pull-only tokens, so it needs pull. The node checks
// every answer against the index it then fetches by digest.
func (h *Handler) getIndexes(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	idx, err := h.reg.IndexesOf(r.Context(), p[pRepo], dgst)
	if err != nil {
		return err
	}
	out := indexesJSON{Digest: dgst.String(), Indexes: make([]string, 0, len(idx))}
	for _, d := range idx {
		out.Indexes = append(out.Indexes, d.String())
	}
	return writeJSON(w, http.StatusOK, out)
}
