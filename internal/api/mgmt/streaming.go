package mgmt

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
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

// streaming serves /acr/v1/{repo}/_streaming (the auto-streaming setting)
// and /acr/v1/{repo}/_streaming/{digest} (the conversion of one image).
func (h *Handler) streaming(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.arg != "" {
		h.imageConversion(w, r, rt)
		return
	}
	ctx := r.Context()
	switch r.Method {
	case "GET":
		repo, err := h.reg.Repository(ctx, rt.repo)
		if errors.Is(err, registry.ErrNameUnknown) {
			writeJSON(w, http.StatusOK, settingsJSON(false))
			return
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, settingsJSON(repo.Streaming))
	case "POST", "PATCH", "PUT":
		var body struct {
			ConvertPushedImages *bool  `json:"convertPushedImages"`
			ConversionFormat    string `json:"conversionFormat,omitempty"`
			ConversionVersion   string `json:"conversionVersion,omitempty"`
			// ConvertExistingImages also converts the images the
			// repository's tags point at now.
			ConvertExistingImages bool `json:"convertExistingImages,omitempty"`
		}
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		if body.ConvertPushedImages == nil {
			h.fail(w, r, fmt.Errorf("%w: convertPushedImages (true or false) is required", errBadRequest))
			return
		}
		if (body.ConversionFormat != "" && body.ConversionFormat != streaming.FormatName) || (body.ConversionVersion != "" && body.ConversionVersion != streaming.FormatVersion) {
			h.fail(w, r, fmt.Errorf("%w: only conversionFormat %q version %q is supported", errBadRequest, streaming.FormatName, streaming.FormatVersion))
			return
		}
		repo, err := h.reg.UpdateRepository(ctx, rt.repo, metadata.RepositoryPatch{Streaming: body.ConvertPushedImages})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := settingsJSON(repo.Streaming)
		if body.ConvertExistingImages {
			ops, skipped, err := h.conv.StartExisting(ctx, rt.repo)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			out.Operations, out.Skipped = make([]any, len(ops)), skipped
			for i, op := range ops {
				out.Operations[i] = operationJSON(op, "")
			}
		}
		writeJSON(w, http.StatusAccepted, out)
	default:
		methodNotAllowed(w, "GET", "POST")
	}
}

// imageConversion starts (POST) or finds (GET) the conversion of an image,
// named by digest or tag.
func (h *Handler) imageConversion(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	dgst, err := h.digestOrTag(r, rt.repo, rt.arg)
	if errors.Is(err, registry.ErrManifestUnknown) {
		h.fail(w, r, &conversion.Error{Code: conversion.CodeResourceNotFound, Message: fmt.Sprintf("image %s:%s not found", rt.repo, rt.arg)})
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var op *metadata.Operation
	switch r.Method {
	case "GET":
		// The running conversion, as clients expect before starting one;
		// ?latest=true the most recent, whatever its status.
		if r.URL.Query().Get("latest") == "true" {
			op, err = h.conv.Latest(ctx, rt.repo, dgst)
		} else {
			op, err = h.conv.Active(ctx, rt.repo, dgst)
		}
	case "POST":
		op, err = h.conv.Start(ctx, rt.repo, dgst)
	default:
		methodNotAllowed(w, "GET", "POST")
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if r.Method == "POST" {
		status = http.StatusAccepted
		setOperationHeaders(w, op)
	}
	writeJSON(w, status, operationJSON(op, ""))
}

func operationLocation(op *metadata.Operation) string {
	if op.Kind == conversion.KindImport {
		return "/acr/v1/_operations/" + op.ID
	}
	return "/acr/v1/" + op.Repository + "/_operations/" + op.ID
}

func setOperationHeaders(w http.ResponseWriter, op *metadata.Operation) {
	loc := operationLocation(op)
	w.Header().Set("Location", loc)
	w.Header().Set("Operation-Location", loc)
	w.Header().Set("Operation-Id", op.ID)
}

// operationJSON is an operation as the managed service shows it.
func operationJSON(op *metadata.Operation, namePrefix string) map[string]any {
	out := map[string]any{
		"id":       op.ID,
		"name":     namePrefix + op.Kind,
		"resource": op.Repository + "@" + op.Digest,
		"status":   op.Status,
		"progress": progressPercent(op),
		"details":  op.Details,
	}
	if op.Kind == conversion.KindImport {
		out["resource"] = op.Digest
		out["target"] = op.Repository
	}
	start := op.StartedAt
	if start.IsZero() {
		start = op.CreatedAt
	}
	out["startTime"] = timestamp(start)
	if !op.FinishedAt.IsZero() {
		out["endTime"] = timestamp(op.FinishedAt)
	}
	if op.TotalBytes > 0 {
		out["progressBytes"] = op.ProgressBytes
		out["totalBytes"] = op.TotalBytes
	}
	if op.Status == metadata.StatusFailed {
		out["error"] = map[string]string{"code": op.ErrorCode, "message": op.ErrorMessage}
	}
	if op.Result != "" {
		out["result"] = rawJSON(op.Result)
	}
	return out
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func progressPercent(op *metadata.Operation) string {
	switch {
	case op.Status == metadata.StatusSucceeded:
		return "100%"
	case op.TotalBytes <= 0:
		return "0%"
	}
	pct := op.ProgressBytes * 100 / op.TotalBytes
	if pct > 99 && op.Active() {
		pct = 99
	}
	return fmt.Sprintf("%d%%", pct)
}

// operation serves GET .../_operations/{id} and POST .../_operations/{id}:cancel.
func (h *Handler) operation(w http.ResponseWriter, r *http.Request, rt route) {
	id, cancel := strings.CutSuffix(rt.arg, ":cancel")
	if id == "" || strings.Contains(id, "/") {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	ctx := r.Context()
	if cancel {
		if r.Method != "POST" {
			methodNotAllowed(w, "POST")
			return
		}
		if rt.repo == "" {
			if op, err := h.conv.Get(ctx, "", id); err == nil && !auth.CallerFrom(ctx).Can(op.Repository, auth.ActionPush) {
				h.fail(w, r, &conversion.Error{Code: conversion.CodeOperationUnknown, Message: "operation " + id + " not found"})
				return
			}
		}
		op, err := h.conv.Cancel(ctx, rt.repo, id)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, operationJSON(op, "Cancel: "))
		return
	}
	if r.Method != "GET" {
		methodNotAllowed(w, "GET")
		return
	}
	op, err := h.conv.Get(ctx, rt.repo, id)
	if err == nil && rt.repo == "" && !auth.CallerFrom(ctx).Can(op.Repository, auth.ActionPush) {
		// Registry-level operations are imports: visible to whoever may
		// write their target.
		err = &conversion.Error{Code: conversion.CodeOperationUnknown, Message: "operation " + id + " not found"}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, operationJSON(op, ""))
}

func (h *Handler) startImport(w http.ResponseWriter, r *http.Request, _ route) {
	var req conversion.ImportRequest
	if err := readJSON(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	caller := auth.CallerFrom(r.Context())
	for _, t := range append(append([]string{}, req.TargetTags...), req.UntaggedTargetRepositories...) {
		repo, _, _ := strings.Cut(t, ":")
		if !caller.Can(repo, auth.ActionPush) {
			writeError(w, http.StatusForbidden, "DENIED", caller.Identity.Name+" may not push to "+repo)
			return
		}
	}
	op, err := h.conv.StartImport(r.Context(), &req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	setOperationHeaders(w, op)
	writeJSON(w, http.StatusAccepted, operationJSON(op, ""))
}

// mount serves the legacy Teleport check: GET /mount/v1/{repo}/_manifests/{digest}
// answers 200 when the image's streaming artifact exists, 409 while its
// conversion is queued or running, and 404 otherwise.
func (h *Handler) mount(w http.ResponseWriter, r *http.Request, rt route) {
	if rt.action != "_manifests" || rt.arg == "" {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	if r.Method != "GET" && r.Method != "HEAD" {
		methodNotAllowed(w, "GET")
		return
	}
	if err := oci.ValidateName(rt.repo); err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	dgst, err := h.digestOrTag(r, rt.repo, rt.arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// Ready means nodes trusting the registry can mount it: signed.
	refs, err := h.conv.SignedReferrers(ctx, rt.repo, dgst)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(refs) > 0 {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "digest": dgst, "referrers": refs})
		return
	}
	if _, err := h.conv.Active(ctx, rt.repo, dgst); err == nil {
		writeJSON(w, http.StatusConflict, map[string]any{"status": "expanding", "digest": dgst})
		return
	}
	repo, err := h.reg.Repository(ctx, rt.repo)
	if err == nil && repo.Streaming {
		writeError(w, http.StatusNotFound, "NOT_EXPANDED", fmt.Sprintf("%s@%s has no streaming artifact yet, though the repository streams: "+
			"it was pushed before streaming was enabled, or its conversion failed; create one with artifact-streaming create "+
			"(or artifact-streaming update --enable-streaming true --convert-existing for every tag)", rt.repo, dgst))
		return
	}
	writeError(w, http.StatusNotFound, "TELEPORT_NOT_ENABLED", "repository "+rt.repo+" does not stream; enable it with teleportEnabled or convertPushedImages")
}
