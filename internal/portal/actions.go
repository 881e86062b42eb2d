package portal

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
)

// Actions are form posts. Each answers with a redirect to the page it was
// posted from (Post/Redirect/Get), with a message saying what was done.

func repoPath(repo string) string { return "/repositories/" + repo }

func imagePath(repo, dgst string) string { return repoPath(repo) + "/_images/" + dgst }

// callerName is who operations the caller starts are recorded as started
// by.
func callerName(ctx context.Context) string { return auth.CallerFrom(ctx).Identity.Name }

// setStreaming starts or stops artifact streaming on a repository: future
// pushes are converted; existing images too when asked.
func (h *Handler) setStreaming(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	repo := p[pRepo]
	var on bool
	switch r.PostForm.Get("streaming") {
	case "start":
		on = true
	case "stop":
	default:
		return badRequest("Say start or stop.")
	}
	if _, err := h.reg.UpdateRepository(ctx, repo, metadata.RepositoryPatch{Streaming: &on}); err != nil {
		return err
	}
	if !on {
		return redirect(w, r, repoPath(repo), "Artifact streaming stopped: new pushes are no longer converted. Existing streaming artifacts stay.")
	}
	msg := "Artifact streaming started: images pushed from now on are converted."
	if r.PostForm.Get("convertExisting") == "on" {
		ops, skipped, err := h.conv.StartExisting(ctx, repo, callerName(ctx))
		if err != nil {
			return err
		}
		msg += fmt.Sprintf(" %d existing images are being converted", len(ops))
		if len(skipped) > 0 {
			msg += fmt.Sprintf(" (%d tags skipped: not runnable images)", len(skipped))
		}
		msg += "."
	}
	return redirect(w, r, repoPath(repo), msg)
}

// setAttributes changes a repository's changeable attributes.
func (h *Handler) setAttributes(w http.ResponseWriter, r *http.Request, p route.Params) error {
	repo := p[pRepo]
	flag := func(name string) *bool { v := r.PostForm.Get(name) == "on"; return &v }
	patch := metadata.RepositoryPatch{Attributes: metadata.AttributesPatch{
		DeleteEnabled: flag("deleteEnabled"), WriteEnabled: flag("writeEnabled"),
		ReadEnabled: flag("readEnabled"), ListEnabled: flag("listEnabled"),
	}}
	if _, err := h.reg.UpdateRepository(r.Context(), repo, patch); err != nil {
		return err
	}
	return redirect(w, r, repoPath(repo), "Attributes saved.")
}

// convert creates a streaming artifact for an image (for an index, of
// every platform, or of the one picked).
func (h *Handler) convert(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	repo := p[pRepo]
	dgst, err := digest.Parse(p[pDigest])
	if err != nil {
		return badRequest("%q is not a digest", p[pDigest])
	}
	target := dgst
	if pick := r.PostForm.Get("platform"); pick != "" && pick != "all" {
		if target, err = digest.Parse(pick); err != nil {
			return badRequest("%q is not a digest", pick)
		}
	}
	op, err := h.conv.Start(ctx, repo, target, callerName(ctx))
	if err != nil {
		return err
	}
	msg := "Conversion " + op.Status + "."
	if op.Status == metadata.StatusSucceeded {
		msg = "This image already has a streaming artifact."
	}
	return redirect(w, r, imagePath(repo, target.String()), msg)
}

// operationFor finds a repository's operation for an action on it, with
// what the caller needs beyond the route's grant: push on an import's
// targets, as starting it needed.
func (h *Handler) operationFor(ctx context.Context, p route.Params) (*metadata.Operation, error) {
	op, err := h.conv.Get(ctx, p[pRepo], p[pID])
	if err != nil {
		return nil, err
	}
	if op.Kind == conversion.KindImport {
		targets, err := conversion.ImportTargets(op)
		if err != nil {
			return nil, err
		}
		var need []auth.Access
		for _, repo := range targets {
			need = append(need, auth.Repo(repo, auth.ActionPush))
		}
		caller := auth.CallerFrom(ctx)
		if missing := auth.Shortfall(caller, need); len(missing) > 0 {
			return nil, &auth.DeniedError{Caller: caller, Missing: missing}
		}
	}
	return op, nil
}

// back is where an action returns to: the page it was posted from when
// that is on this site, else fallback.
func back(r *http.Request, fallback string) string {
	if ret := r.PostForm.Get("return"); ret != "" {
		return safeNext(ret)
	}
	return fallback
}

func (h *Handler) cancelOperation(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	op, err := h.operationFor(ctx, p)
	if err != nil {
		return err
	}
	if op, err = h.conv.Cancel(ctx, op); err != nil {
		return err
	}
	return redirect(w, r, back(r, "/operations"), "Operation "+op.ID+" is "+op.Status+".")
}

func (h *Handler) retryOperation(w http.ResponseWriter, r *http.Request, p route.Params) error {
	ctx := r.Context()
	op, err := h.operationFor(ctx, p)
	if err != nil {
		return err
	}
	retried, err := h.conv.Retry(ctx, op, callerName(ctx), nil)
	if err != nil {
		return err
	}
	return redirect(w, r, back(r, "/operations"), "Started again as operation "+retried.ID+".")
}

// forgetProfile deletes the startup profile of a streaming layer; the next
// node to start the image records a new one.
func (h *Handler) forgetProfile(w http.ResponseWriter, r *http.Request, p route.Params) error {
	layer, err := digest.Parse(p[pID])
	if err != nil {
		return badRequest("%q is not a digest", p[pID])
	}
	if err := h.reg.DeleteStartupProfile(r.Context(), p[pRepo], layer); err != nil {
		return err
	}
	return redirect(w, r, imagePath(p[pRepo], p[pDigest])+"?tab=profile", "Startup profile forgotten; the next node to start the image records a new one.")
}

// restore restores a soft-deleted image, tagged if a tag is given.
func (h *Handler) restore(w http.ResponseWriter, r *http.Request, p route.Params) error {
	dgst, err := digest.Parse(p[pDigest])
	if err != nil {
		return badRequest("%q is not a digest", p[pDigest])
	}
	tag := strings.TrimSpace(r.PostForm.Get("tag"))
	if err := h.reg.RestoreManifest(r.Context(), p[pRepo], dgst, tag, false); err != nil {
		return err
	}
	msg := "Image restored"
	if tag != "" {
		msg += " as " + p[pRepo] + ":" + tag
	}
	return redirect(w, r, back(r, "/deleted"), msg+".")
}

// createToken creates a token; its passwords are shown on the page this
// once, not in a redirect's URL.
func (h *Handler) createToken(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	var expiry time.Time
	if e := strings.TrimSpace(r.PostForm.Get("expiry")); e != "" {
		t, err := time.Parse("2006-01-02", e)
		if err != nil {
			return badRequest("Expiry %q is not a date (YYYY-MM-DD).", e)
		}
		expiry = t
	}
	info, err := h.auth.CreateToken(r.Context(), strings.TrimSpace(r.PostForm.Get("name")), r.PostForm.Get("scopeMap"), true, expiry)
	if err != nil {
		return err
	}
	return h.renderAccess(w, r, info)
}

func (h *Handler) regenerate(w http.ResponseWriter, r *http.Request, p route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	var names []string
	if n := r.PostForm.Get("password"); n != "" && n != "both" {
		names = []string{n}
	}
	info, err := h.auth.GenerateCredentials(r.Context(), p[pToken], names, time.Time{})
	if err != nil {
		return err
	}
	return h.renderAccess(w, r, info)
}

func (h *Handler) setTokenEnabled(w http.ResponseWriter, r *http.Request, p route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	on := r.PostForm.Get("enabled") == "true"
	if _, err := h.auth.UpdateToken(r.Context(), p[pToken], nil, &on); err != nil {
		return err
	}
	state := "disabled"
	if on {
		state = "enabled"
	}
	return redirect(w, r, "/access", "Token "+p[pToken]+" "+state+".")
}

func (h *Handler) deleteToken(w http.ResponseWriter, r *http.Request, p route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	if err := h.auth.DeleteToken(r.Context(), p[pToken]); err != nil {
		return err
	}
	return redirect(w, r, "/access", "Token "+p[pToken]+" deleted.")
}

// createScopeMap creates a scope map from lines "REPOSITORY-PATTERN
// ACTION[,ACTION]" (as `sluice scope-map create --repository` takes them).
func (h *Handler) createScopeMap(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	var actions []string
	for _, line := range strings.Split(r.PostForm.Get("repositories"), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return badRequest("Line %q: write a repository pattern, a space, and actions separated by commas (team/* content/read,metadata/read).", strings.TrimSpace(line))
		}
		for _, a := range strings.Split(fields[1], ",") {
			actions = append(actions, "repositories/"+fields[0]+"/"+strings.TrimSpace(a))
		}
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if _, err := h.auth.CreateScopeMap(r.Context(), name, strings.TrimSpace(r.PostForm.Get("description")), actions); err != nil {
		return err
	}
	return redirect(w, r, "/access", "Scope map "+name+" created.")
}

func (h *Handler) deleteScopeMap(w http.ResponseWriter, r *http.Request, p route.Params) error {
	if h.auth == nil {
		return badRequest("Authentication is turned off.")
	}
	if err := h.auth.DeleteScopeMap(r.Context(), p[pMap]); err != nil {
		return err
	}
	return redirect(w, r, "/access", "Scope map "+p[pMap]+" deleted.")
}

// pullCommands are the commands to pull an image, to copy.
func pullCommands(host, repo, dgst string) []string {
	ref := host + "/" + repo + "@" + dgst
	return []string{
		"ctr image pull " + ref,
		"sluice pull " + ref,
		"crictl pull " + ref,
	}
}
