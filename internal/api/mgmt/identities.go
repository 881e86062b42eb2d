package mgmt

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/metadata"
)

// tokenJSON is a token as the managed service shows it, so that
// --query credentials.passwords[0].value works on a create.
type tokenJSON struct {
	Name         string          `json:"name"`
	Status       string          `json:"status"`
	ScopeMapID   string          `json:"scopeMapId"`
	CreationDate string          `json:"creationDate"`
	Credentials  credentialsJSON `json:"credentials"`
}

type credentialsJSON struct {
	Username  string         `json:"username"`
	Passwords []passwordJSON `json:"passwords"`
}

type passwordJSON struct {
	Name         string  `json:"name"`
	Value        string  `json:"value,omitempty"`
	CreationTime string  `json:"creationTime"`
	Expiry       *string `json:"expiry"`
}

func toTokenJSON(t *auth.TokenInfo) tokenJSON {
	status := "enabled"
	if !t.Enabled {
		status = "disabled"
	}
	out := tokenJSON{Name: t.Name, Status: status, ScopeMapID: t.ScopeMap, CreationDate: timestamp(t.CreatedAt),
		Credentials: credentialsJSON{Username: t.Name, Passwords: []passwordJSON{}}}
	for _, p := range t.Passwords {
		pj := passwordJSON{Name: p.Name, Value: p.Value, CreationTime: timestamp(p.CreatedAt)}
		if !p.ExpiresAt.IsZero() {
			e := timestamp(p.ExpiresAt)
			pj.Expiry = &e
		}
		out.Credentials.Passwords = append(out.Credentials.Passwords, pj)
	}
	return out
}

type scopeMapJSON struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Type         string   `json:"type"`
	Actions      []string `json:"actions"`
	CreationDate string   `json:"creationDate"`
}

func toScopeMapJSON(m *metadata.ScopeMap) scopeMapJSON {
	typ := "UserDefined"
	if m.Builtin {
		typ = "SystemDefined"
	}
	return scopeMapJSON{Name: m.Name, Description: m.Description, Type: typ, Actions: m.Actions, CreationDate: timestamp(m.CreatedAt)}
}

// reply answers v as JSON with status, or err.
func reply[T, J any](w http.ResponseWriter, status int, v T, err error, toJSON func(T) J) error {
	if err != nil {
		return err
	}
	return writeJSON(w, status, toJSON(v))
}

// named is the shape tokens and scope maps share: listed, shown and
// deleted by name, by the admin (each is created and changed with a body
// of its own).
type named[T, J any] struct {
	h      *Handler
	param  string
	list   func(a *auth.Service, ctx context.Context) ([]T, error)
	get    func(a *auth.Service, ctx context.Context, name string) (T, error)
	remove func(a *auth.Service, ctx context.Context, name string) error
	toJSON func(T) J
}

func (n named[T, J]) listAll(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	a, err := n.h.identities()
	if err != nil {
		return err
	}
	items, err := n.list(a, r.Context())
	if err != nil {
		return err
	}
	out := make([]J, len(items))
	for i, it := range items {
		out[i] = n.toJSON(it)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (n named[T, J]) show(w http.ResponseWriter, r *http.Request, p route.Params) error {
	a, err := n.h.identities()
	if err != nil {
		return err
	}
	it, err := n.get(a, r.Context(), p[n.param])
	return reply(w, http.StatusOK, it, err, n.toJSON)
}

func (n named[T, J]) delete(w http.ResponseWriter, r *http.Request, p route.Params) error {
	a, err := n.h.identities()
	if err != nil {
		return err
	}
	if err := n.remove(a, r.Context(), p[n.param]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) tokens() named[*auth.TokenInfo, tokenJSON] {
	return named[*auth.TokenInfo, tokenJSON]{h: h, param: pToken, list: (*auth.Service).ListTokens,
		get: (*auth.Service).GetToken, remove: (*auth.Service).DeleteToken, toJSON: toTokenJSON}
}

func (h *Handler) scopeMaps() named[*metadata.ScopeMap, scopeMapJSON] {
	list := func(a *auth.Service, ctx context.Context) ([]*metadata.ScopeMap, error) {
		maps, err := a.ListScopeMaps(ctx)
		out := make([]*metadata.ScopeMap, len(maps))
		for i := range maps {
			out[i] = &maps[i]
		}
		return out, err
	}
	return named[*metadata.ScopeMap, scopeMapJSON]{h: h, param: pScopeMap, list: list,
		get: (*auth.Service).GetScopeMap, remove: (*auth.Service).DeleteScopeMap, toJSON: toScopeMapJSON}
}

// identities is the auth service, which is nil when authentication is off.
func (h *Handler) identities() (*auth.Service, error) {
	if h.auth == nil {
		return nil, errAuthDisabled
	}
	return h.auth, nil
}

// parseExpiry reads an optional RFC 3339 expiry.
func parseExpiry(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: expiry must be an RFC 3339 time like 2027-01-31T00:00:00Z", errBadRequest)
	}
	return t, nil
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	a, err := h.identities()
	if err != nil {
		return err
	}
	var body struct {
		Name       string `json:"name"`
		ScopeMapID string `json:"scopeMapId"`
		Status     string `json:"status"`
		Expiry     string `json:"expiry"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	expiry, err := parseExpiry(body.Expiry)
	if err != nil {
		return err
	}
	if body.ScopeMapID == "" {
		return fmt.Errorf("%w: scopeMapId is required", errBadRequest)
	}
	t, err := a.CreateToken(r.Context(), body.Name, body.ScopeMapID, body.Status != "disabled", expiry)
	return reply(w, http.StatusCreated, t, err, toTokenJSON)
}

func (h *Handler) updateToken(w http.ResponseWriter, r *http.Request, p route.Params) error {
	a, err := h.identities()
	if err != nil {
		return err
	}
	var body struct {
		ScopeMapID *string `json:"scopeMapId"`
		Status     *string `json:"status"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	var enabled *bool
	if body.Status != nil {
		if *body.Status != "enabled" && *body.Status != "disabled" {
			return fmt.Errorf("%w: status must be enabled or disabled", errBadRequest)
		}
		e := *body.Status == "enabled"
		enabled = &e
	}
	t, err := a.UpdateToken(r.Context(), p[pToken], body.ScopeMapID, enabled)
	return reply(w, http.StatusOK, t, err, toTokenJSON)
}

// generateCredentials makes new passwords of a token (all of them, or
// those named), answered once.
func (h *Handler) generateCredentials(w http.ResponseWriter, r *http.Request, p route.Params) error {
	a, err := h.identities()
	if err != nil {
		return err
	}
	var body struct {
		Name      string   `json:"name"`
		Passwords []string `json:"passwords"`
		Expiry    string   `json:"expiry"`
	}
	if r.ContentLength != 0 {
		if err := readJSON(r, &body); err != nil {
			return err
		}
	}
	expiry, err := parseExpiry(body.Expiry)
	if err != nil {
		return err
	}
	names := body.Passwords
	if body.Name != "" {
		names = append(names, body.Name)
	}
	t, err := a.GenerateCredentials(r.Context(), p[pToken], names, expiry)
	return reply(w, http.StatusOK, t, err, toTokenJSON)
}

func (h *Handler) createScopeMap(w http.ResponseWriter, r *http.Request, _ route.Params) error {
	a, err := h.identities()
	if err != nil {
		return err
	}
	var body struct {
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Actions     []string `json:"actions"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	m, err := a.CreateScopeMap(r.Context(), body.Name, body.Description, body.Actions)
	return reply(w, http.StatusCreated, m, err, toScopeMapJSON)
}

func (h *Handler) updateScopeMap(w http.ResponseWriter, r *http.Request, p route.Params) error {
	a, err := h.identities()
	if err != nil {
		return err
	}
	var body struct {
		Description   *string  `json:"description"`
		AddActions    []string `json:"addActions"`
		RemoveActions []string `json:"removeActions"`
	}
	if err := readJSON(r, &body); err != nil {
		return err
	}
	m, err := a.UpdateScopeMap(r.Context(), p[pScopeMap], body.AddActions, body.RemoveActions, body.Description)
	return reply(w, http.StatusOK, m, err, toScopeMapJSON)
}
