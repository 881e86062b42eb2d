package mgmt

import (
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
)

// profileJSON is a startup profile on the wire.
type profileJSON struct {
	Digest    string            `json:"digest"`
	Ranges    []streaming.Range `json:"ranges"`
	UpdatedAt string            `json:"updatedAt"`
}

// maxProfileBody bounds a profile upload: streaming.MaxProfileRanges
// ranges of two numbers of up to 19 digits each, and some room.
const maxProfileBody = int64(streaming.MaxProfileRanges*len("[1234567890123456789,1234567890123456789],") + 4<<10)

// profiles serves /acr/v1/{repo}/_profiles/{layer digest}: the startup
// profile of a streamed layer in that repository (each repository holding
// a layer has its own). Nodes that may pull the repository read it and give
// the one they recorded (PUT); deleting it needs delete access.
func (h *Handler) profiles(w http.ResponseWriter, r *http.Request, rt route) {
	dgst, err := oci.ParseDigest(rt.arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	switch r.Method {
	case "GET", "HEAD":
		p, err := h.reg.StartupProfile(ctx, rt.repo, dgst)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, profileJSON{Digest: dgst.String(), Ranges: p.Ranges, UpdatedAt: timestamp(p.Updated)})
	case "PUT":
		var body struct {
			Ranges []streaming.Range `json:"ranges"`
		}
		if err := readJSONUpTo(r, &body, maxProfileBody); err != nil {
			h.fail(w, r, fmt.Errorf("%w (want {\"ranges\": [[offset, length], ...]})", err))
			return
		}
		if err := h.reg.PutStartupProfile(ctx, rt.repo, dgst, body.Ranges); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "DELETE":
		if err := h.reg.DeleteStartupProfile(ctx, rt.repo, dgst); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PUT", "DELETE")
	}
}
