package mgmt

import (
	"fmt"
	"net/http"
	"strings"
	"time"

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

// reply writes v as JSON with status, or err as an error answer.
func reply[T, J any](h *Handler, w http.ResponseWriter, r *http.Request, status int, v T, err error, toJSON func(T) J) {
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, status, toJSON(v))
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

// tokens serves /acr/v1/_tokens[/{name}[/_credentials]].
func (h *Handler) tokens(w http.ResponseWriter, r *http.Request, rt route) {
	if h.auth == nil {
		writeError(w, http.StatusNotFound, "AUTH_DISABLED", "authentication is turned off (auth.enabled: false); there are no tokens")
		return
	}
	ctx := r.Context()
	name, sub, _ := strings.Cut(rt.arg, "/")
	switch {
	case name == "" && r.Method == "GET":
		toks, err := h.auth.ListTokens(ctx)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]tokenJSON, len(toks))
		for i, t := range toks {
			out[i] = toTokenJSON(t)
		}
		writeJSON(w, http.StatusOK, out)
	case name == "" && r.Method == "POST":
		var body struct {
			Name       string `json:"name"`
			ScopeMapID string `json:"scopeMapId"`
			Status     string `json:"status"`
			Expiry     string `json:"expiry"`
		}
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		expiry, err := parseExpiry(body.Expiry)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if body.ScopeMapID == "" {
			h.fail(w, r, fmt.Errorf("%w: scopeMapId is required", errBadRequest))
			return
		}
		t, err := h.auth.CreateToken(ctx, body.Name, body.ScopeMapID, body.Status != "disabled", expiry)
		reply(h, w, r, http.StatusCreated, t, err, toTokenJSON)
	case name == "":
		methodNotAllowed(w, "GET", "POST")
	case sub == "_credentials" && r.Method == "POST":
		var body struct {
			Name      string   `json:"name"`
			Passwords []string `json:"passwords"`
			Expiry    string   `json:"expiry"`
		}
		if r.ContentLength != 0 {
			if err := readJSON(r, &body); err != nil {
				h.fail(w, r, err)
				return
			}
		}
		expiry, err := parseExpiry(body.Expiry)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		names := body.Passwords
		if body.Name != "" {
			names = append(names, body.Name)
		}
		t, err := h.auth.GenerateCredentials(ctx, name, names, expiry)
		reply(h, w, r, http.StatusOK, t, err, toTokenJSON)
	case sub != "":
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	case r.Method == "GET":
		t, err := h.auth.GetToken(ctx, name)
		reply(h, w, r, http.StatusOK, t, err, toTokenJSON)
	case r.Method == "PATCH":
		var body struct {
			ScopeMapID *string `json:"scopeMapId"`
			Status     *string `json:"status"`
		}
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		var enabled *bool
		if body.Status != nil {
			if *body.Status != "enabled" && *body.Status != "disabled" {
				h.fail(w, r, fmt.Errorf("%w: status must be enabled or disabled", errBadRequest))
				return
			}
			e := *body.Status == "enabled"
			enabled = &e
		}
		t, err := h.auth.UpdateToken(ctx, name, body.ScopeMapID, enabled)
		reply(h, w, r, http.StatusOK, t, err, toTokenJSON)
	case r.Method == "DELETE":
		if err := h.auth.DeleteToken(ctx, name); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PATCH", "DELETE")
	}
}

// scopeMaps serves /acr/v1/_scopemaps[/{name}].
func (h *Handler) scopeMaps(w http.ResponseWriter, r *http.Request, rt route) {
	if h.auth == nil {
		writeError(w, http.StatusNotFound, "AUTH_DISABLED", "authentication is turned off (auth.enabled: false); there are no scope maps")
		return
	}
	ctx := r.Context()
	name := rt.arg
	switch {
	case name == "" && r.Method == "GET":
		maps, err := h.auth.ListScopeMaps(ctx)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		out := make([]scopeMapJSON, len(maps))
		for i := range maps {
			out[i] = toScopeMapJSON(&maps[i])
		}
		writeJSON(w, http.StatusOK, out)
	case name == "" && r.Method == "POST":
		var body struct {
			Name        string   `json:"name"`
			Description string   `json:"description"`
			Actions     []string `json:"actions"`
		}
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		m, err := h.auth.CreateScopeMap(ctx, body.Name, body.Description, body.Actions)
		reply(h, w, r, http.StatusCreated, m, err, toScopeMapJSON)
	case name == "":
		methodNotAllowed(w, "GET", "POST")
	case r.Method == "GET":
		m, err := h.auth.GetScopeMap(ctx, name)
		reply(h, w, r, http.StatusOK, m, err, toScopeMapJSON)
	case r.Method == "PATCH":
		var body struct {
			Description   *string  `json:"description"`
			AddActions    []string `json:"addActions"`
			RemoveActions []string `json:"removeActions"`
		}
		if err := readJSON(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
		m, err := h.auth.UpdateScopeMap(ctx, name, body.AddActions, body.RemoveActions, body.Description)
		reply(h, w, r, http.StatusOK, m, err, toScopeMapJSON)
	case r.Method == "DELETE":
		if err := h.auth.DeleteScopeMap(ctx, name); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w, "GET", "PATCH", "DELETE")
	}
}
