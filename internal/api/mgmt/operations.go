package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/api/wire"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

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
		// startedBy is "" for operations recorded before it was.
		"startedBy": op.StartedBy,
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

// getOperation answers an operation: of a repository, or (without one)
// a registry-level import, visible to whoever may write its target.
func (h *Handler) getOperation(w http.ResponseWriter, r *http.Request, p route.Params) error {
	op, err := h.operation(r, p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, operationJSON(op, ""))
}

// cancelOperation cancels an operation, found as getOperation finds it.
func (h *Handler) cancelOperation(w http.ResponseWriter, r *http.Request, p route.Params) error {
	op, err := h.operation(r, p)
	if err != nil {
		return err
	}
	op, err = h.conv.Cancel(r.Context(), op)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, operationJSON(op, "Cancel: "))
}

// operation finds the operation a request names: a repository's, or a
// registry-level import the caller may push to the target of.
func (h *Handler) operation(r *http.Request, p route.Params) (*metadata.Operation, error) {
	ctx := r.Context()
	op, err := h.conv.Get(ctx, p[pRepo], p[pID])
	if err == nil && p[pRepo] == "" && !auth.CallerFrom(ctx).Can(op.Repository, auth.ActionPush) {
		err = &conversion.Error{Code: conversion.CodeOperationUnknown, Message: "operation " + p[pID] + " not found"}
	}
	return op, err
}

// The values the listing of operations filters on.
var (
	operationStatuses = []string{metadata.StatusNotStarted, metadata.StatusRunning, metadata.StatusSucceeded, metadata.StatusFailed, metadata.StatusCanceled}
	operationKinds    = []string{conversion.KindConversion, conversion.KindImport}
)

// operationsNeed is what listing operations needs: with ?repository=, what
// reading one of that repository's operations needs (so that a token
// client asks for that scope); across the registry, what the catalog
// needs, the listing then showing only the operations the caller may read.
func operationsNeed(r *http.Request, p route.Params) auth.Requirement {
	if repo := r.URL.Query().Get("repository"); repo != "" && oci.ValidateName(repo) == nil {
		return auth.Requirement{Accesses: []auth.Access{auth.Repo(repo, auth.ActionMetadataRead)}}
	}
	return route.Registry(auth.Catalog)(r, p)
}

// listOperations answers operations newest first, in pages of n after the
// operation last, filtered by status, kind and repository (the path's, or
// ?repository=). Across the registry a caller sees the operations of the
// repositories whose metadata it may read, and the imports it may push the
// target of, as getOperation shows them.
func (h *Handler) listOperations(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	q := r.URL.Query()
	f := metadata.OperationFilter{Status: q.Get("status"), Kind: q.Get("kind"), Repository: q.Get("repository")}
	if f.Status != "" && !slices.Contains(operationStatuses, f.Status) {
		return fmt.Errorf("%w: status=%q: use one of %s", errBadRequest, f.Status, strings.Join(operationStatuses, ", "))
	}
	if f.Kind != "" && !slices.Contains(operationKinds, f.Kind) {
		return fmt.Errorf("%w: kind=%q: use one of %s", errBadRequest, f.Kind, strings.Join(operationKinds, ", "))
	}
	path := "/acr/v1/_operations"
	if repo := p[pRepo]; repo != "" {
		if f.Repository != "" && f.Repository != repo {
			return fmt.Errorf("%w: repository=%q differs from the repository of the path, %s", errBadRequest, f.Repository, repo)
		}
		f.Repository, path = repo, "/acr/v1/"+repo+"/_operations"
	}
	if f.Repository != "" {
		if err := oci.ValidateName(f.Repository); err != nil {
			return err
		}
	}
	n, last, err := pageOf(r)
	if err != nil {
		return err
	}
	caller := auth.CallerFrom(ctx)
	visible := func(op *metadata.Operation) bool {
		return caller.Can(op.Repository, auth.ActionMetadataRead) ||
			(op.Kind == conversion.KindImport && caller.Can(op.Repository, auth.ActionPush))
	}
	ops, more, err := h.conv.List(ctx, f, last, n, visible)
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: last=%q is not an operation; give the id of the last operation of the page before", errBadRequest, last)
	}
	if err != nil {
		return err
	}
	if more && len(ops) > 0 {
		keep := url.Values{}
		for _, k := range []string{"status", "kind", "repository"} {
			if v := q.Get(k); v != "" {
				keep.Set(k, v)
			}
		}
		wire.NextLinkQuery(w, path, keep, n, ops[len(ops)-1].ID)
	}
	out := make([]map[string]any, len(ops))
	for i, op := range ops {
		out[i] = operationJSON(op, "")
	}
	return writeJSON(w, http.StatusOK, map[string]any{"operations": out})
}

// retryBody is the optional body of a retry: the source registry's
// credentials for an import that needs them, which are never stored.
type retryBody struct {
	Credentials *conversion.ImportCredentials `json:"credentials,omitempty"`
}

// retryOperation starts a Failed or Canceled operation of a repository
// again, as a new operation answered as starting one is (202,
// Operation-Location). The route needs metadata_write on the repository,
// as starting a conversion does; an import (found by its first target)
// also needs push on every target, as starting it did.
func (h *Handler) retryOperation(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	op, err := h.operation(r, p)
	if err != nil {
		return err
	}
	var body retryBody
	if r.ContentLength != 0 {
		if err := readJSON(r, &body); err != nil {
			return err
		}
	}
	var need []auth.Access
	if p[pRepo] == "" && op.Kind != conversion.KindImport {
		// Through the registry-level route, what the repository's route
		// needs of its caller.
		need = append(need, auth.Repo(op.Repository, auth.ActionMetadataWrite))
	}
	if op.Kind == conversion.KindImport {
		targets, err := conversion.ImportTargets(op)
		if err != nil {
			return err
		}
		for _, repo := range targets {
			need = append(need, auth.Repo(repo, auth.ActionPush))
		}
	}
	caller := auth.CallerFrom(ctx)
	if missing := auth.Shortfall(caller, need); len(missing) > 0 {
		return &auth.DeniedError{Caller: caller, Missing: missing}
	}
	retried, err := h.conv.Retry(ctx, op, callerName(ctx), body.Credentials)
	if err != nil {
		return err
	}
	setOperationHeaders(w, retried)
	return writeJSON(w, http.StatusAccepted, operationJSON(retried, ""))
}

// callerName is who operations the caller starts are recorded as started
// by: the admin user's or the token's name, whether it sent credentials or
// a bearer token ("anonymous" for callers with neither).
func callerName(ctx context.Context) string {
	c := auth.CallerFrom(ctx)
	if c.Claims != nil && c.Claims.IdentityKind != auth.Anonymous && c.Claims.Subject != "" {
		return c.Claims.Subject
	}
	return c.Identity.Name
}
