package mgmt

import (
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
)

// profileJSON is a startup profile on the wire.
type profileJSON struct {
	Digest    string            `json:"digest"`
	Ranges    []streaming.Range `json:"ranges"`
	UpdatedAt string            `json:"updatedAt"`
	// Source is "recorded" (by a node's start) or "inferred" (by the
	// converter from the image config, until a node records one).
	Source string `json:"source"`
}

// maxProfileBody bounds a profile upload: streaming.MaxProfileRanges
// ranges of two numbers of up to 19 digits each, and some room.
const maxProfileBody = int64(streaming.MaxProfileRanges*len("[1234567890123456789,1234567890123456789],") + 4<<10)

// The startup profile of a streamed layer in a repository,
// /acr/v1/{repo}/_profiles/{layer digest} (each repository holding a layer
// has its own): nodes that may pull the repository read it and give the
// one they recorded (PUT); deleting it needs delete access.

func (h *Handler) getProfile(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	prof, err := h.reg.StartupProfile(r.Context(), p[pRepo], dgst)
	if err != nil {
		return err
	}
	source := "recorded"
	if prof.Inferred {
		source = "inferred"
	}
	return writeJSON(w, http.StatusOK, profileJSON{Digest: dgst.String(), Ranges: prof.Ranges, UpdatedAt: timestamp(prof.Updated), Source: source})
}

func (h *Handler) putProfile(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	var body struct {
		Ranges []streaming.Range `json:"ranges"`
	}
	if err := readJSONUpTo(r, &body, maxProfileBody); err != nil {
		return fmt.Errorf("%w (want {\"ranges\": [[offset, length], ...]})", err)
	}
	if err := h.reg.PutStartupProfile(r.Context(), p[pRepo], dgst, body.Ranges); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) deleteProfile(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := oci.ParseDigest(p[pDigest])
	if err != nil {
		return err
	}
	if err := h.reg.DeleteStartupProfile(r.Context(), p[pRepo], dgst); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
