package mgmt

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/streaming"
)

type streamingSettings struct {
	ConvertPushedImages bool   `json:"convertPushedImages"`
	ConversionFormat    string `json:"conversionFormat"`
	ConversionVersion   string `json:"conversionVersion"`
	// Operations and Skipped answer convertExistingImages: a conversion
	// per image a tag points at, and what could not be converted.
	Operations []any                `json:"operations,omitempty"`
	Skipped    []conversion.Skipped `json:"skipped,omitempty"`
}

func settingsJSON(on bool) streamingSettings {
	return streamingSettings{ConvertPushedImages: on, ConversionFormat: streaming.FormatName, ConversionVersion: streaming.FormatVersion}
}

// getStreaming answers a repository's auto-streaming setting (off for a
// repository that does not exist yet).
func (h *Handler) getStreaming(w http.ResponseWriter, r *http.Request, p route.Params) error {
	repo, err := h.reg.Repository(r.Context(), p[pRepo])
	if errors.Is(err, registry.ErrNameUnknown) {
		return writeJSON(w, http.StatusOK, settingsJSON(false))
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, settingsJSON(repo.Streaming))
}

// setStreaming changes a repository's auto-streaming setting, and with
// convertExistingImages converts the images its tags point at now.
func (h *Handler) setStreaming(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	var body struct {
		ConvertPushedImages *bool  `json:"convertPushedImages"`
		ConversionFormat    string `json:"conversionFormat,omitempty"`
		ConversionVersion   string `json:"conversionVersion,omitempty"`
		// ConvertExistingImages also converts the images the
		// repository's tags point at now.
		ConvertExistingImages bool `json:"convertExistingImages,omitempty"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	if body.ConvertPushedImages == nil {
		return fmt.Errorf("%w: convertPushedImages (true or false) is required", errBadRequest)
	}
	if (body.ConversionFormat != "" && body.ConversionFormat != streaming.FormatName) || (body.ConversionVersion != "" && body.ConversionVersion != streaming.FormatVersion) {
		return fmt.Errorf("%w: only conversionFormat %q version %q is supported", errBadRequest, streaming.FormatName, streaming.FormatVersion)
	}
	repo, err := h.reg.UpdateRepository(ctx, p[pRepo], metadata.RepositoryPatch{Streaming: body.ConvertPushedImages})
	if err != nil {
		return err
	}
	out := settingsJSON(repo.Streaming)
	if body.ConvertExistingImages {
		ops, skipped, err := h.conv.StartExisting(ctx, p[pRepo], callerName(ctx))
		if err != nil {
			return err
		}
		out.Operations, out.Skipped = make([]any, len(ops)), skipped
		for i, op := range ops {
			out.Operations[i] = operationJSON(op, "")
		}
	}
	return writeJSON(w, http.StatusAccepted, out)
}

// imageConversion answers the conversion of an image, named by digest or
// tag: the running one, as clients expect before starting one, or with
// ?latest=true the most recent, whatever its status.
func (h *Handler) imageConversion(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := h.conversionSubject(r, p)
	if err != nil {
		return err
	}
	var op *metadata.Operation
	if r.URL.Query().Get("latest") == "true" {
		op, err = h.conv.Latest(r.Context(), p[pRepo], dgst)
	} else {
		op, err = h.conv.Active(r.Context(), p[pRepo], dgst)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, operationJSON(op, ""))
}

// startConversion starts the conversion of an image, or answers the one
// running.
func (h *Handler) startConversion(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := h.conversionSubject(r, p)
	if err != nil {
		return err
	}
	op, err := h.conv.Start(r.Context(), p[pRepo], dgst, callerName(r.Context()))
	if err != nil {
		return err
	}
	setOperationHeaders(w, op)
	return writeJSON(w, http.StatusAccepted, operationJSON(op, ""))
}

// conversionSubject resolves the image of a conversion request.
func (h *Handler) conversionSubject(r *http.Request, p route.Params) (digest.Digest, error) {
	dgst, err := h.digestOrTag(r, p[pRepo], p[pRef])
	if errors.Is(err, registry.ErrManifestUnknown) {
		return "", &conversion.Error{Code: conversion.CodeResourceNotFound, Message: fmt.Sprintf("image %s:%s not found", p[pRepo], p[pRef])}
	}
	return dgst, err
}

func (h *Handler) startImport(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	var req conversion.ImportRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	caller := auth.CallerFrom(r.Context())
	var need []auth.Access
	for _, t := range append(append([]string{}, req.TargetTags...), req.UntaggedTargetRepositories...) {
		repo, _, _ := strings.Cut(t, ":")
		need = append(need, auth.Repo(repo, auth.ActionPush))
	}
	if missing := auth.Shortfall(caller, need); len(missing) > 0 {
		return &auth.DeniedError{Caller: caller, Missing: missing}
	}
	op, err := h.conv.StartImport(r.Context(), &req, callerName(r.Context()))
	if err != nil {
		return err
	}
	setOperationHeaders(w, op)
	return writeJSON(w, http.StatusAccepted, operationJSON(op, ""))
}

// mount serves the legacy Teleport check: GET /mount/v1/{repo}/_manifests/{ref}
// answers 200 when the image's streaming artifact exists (signed by the
// registry), 409 while its conversion is queued or running, and 404
// otherwise.
func (h *Handler) mount(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	repoName := p[pRepo]
	dgst, err := h.digestOrTag(r, repoName, p[pRef])
	if err != nil {
		return err
	}
	// Ready means nodes trusting the registry can mount it: signed.
	refs, err := h.conv.SignedReferrers(ctx, repoName, dgst)
	if err != nil {
		return err
	}
	if len(refs) > 0 {
		return writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "digest": dgst, "referrers": refs})
	}
	if _, err := h.conv.Active(ctx, repoName, dgst); err == nil {
		return writeJSON(w, http.StatusConflict, map[string]any{"status": "expanding", "digest": dgst})
	}
	repo, err := h.reg.Repository(ctx, repoName)
	if err == nil && repo.Streaming {
		wire.Errors(w, http.StatusNotFound, "NOT_EXPANDED", fmt.Sprintf("%s@%s has no streaming artifact yet, though the repository streams: "+
			"it was pushed before streaming was enabled, or its conversion failed; create one with artifact-streaming create "+
			"(or artifact-streaming update --enable-streaming true --convert-existing for every tag)", repoName, dgst), nil)
		return nil
	}
	wire.Errors(w, http.StatusNotFound, "TELEPORT_NOT_ENABLED", "repository "+repoName+" does not stream; enable it with teleportEnabled or convertPushedImages", nil)
	return nil
}
