package mgmt_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

// TestIdentityErrors checks that each refusal of the token and scope map
// API says what was wrong once, in words a user reads as they are.
func TestIdentityErrors(t *testing.T) {
	tr := newTestRegistry(t, false, func(c *config.Config) {
		c.Auth.Enabled = true
		c.AdminPassword = "admin-secret-1"
	})
	admin := tr.as("admin", "admin-secret-1")
	admin.expect("POST", "/acr/v1/_scopemaps", `{"name":"team-a-devs","actions":["repositories/team-a/*/content/read"]}`, http.StatusCreated)
	admin.expect("POST", "/acr/v1/_tokens", `{"name":"node-pull","scopeMapId":"team-a-devs"}`, http.StatusCreated)

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantError, wantMessage   string
	}{
		{"token exists", "POST", "/acr/v1/_tokens", `{"name":"node-pull","scopeMapId":"_repositories_pull"}`,
			http.StatusConflict, "ALREADY_EXISTS", "token node-pull already exists"},
		{"token not found", "DELETE", "/acr/v1/_tokens/ci-token", "", http.StatusNotFound, "NOT_FOUND", "token ci-token not found"},
		{"token show not found", "GET", "/acr/v1/_tokens/ci-token", "", http.StatusNotFound, "NOT_FOUND", "token ci-token not found"},
		{"token of a missing scope map", "POST", "/acr/v1/_tokens", `{"name":"ci-token","scopeMapId":"nowhere"}`,
			http.StatusNotFound, "NOT_FOUND", "scope map nowhere not found"},
		{"scope map exists", "POST", "/acr/v1/_scopemaps", `{"name":"team-a-devs","actions":["repositories/x/content/read"]}`,
			http.StatusConflict, "ALREADY_EXISTS", "scope map team-a-devs already exists"},
		{"scope map not found", "DELETE", "/acr/v1/_scopemaps/nowhere", "", http.StatusNotFound, "NOT_FOUND", "scope map nowhere not found"},
		{"scope map in use", "DELETE", "/acr/v1/_scopemaps/team-a-devs", "", http.StatusConflict, "IN_USE",
			"scope map team-a-devs is in use by token node-pull; give the token another scope map, or delete it, first"},
		{"invalid token name", "POST", "/acr/v1/_tokens", `{"name":"x","scopeMapId":"_repositories_pull"}`, http.StatusBadRequest, "NAME_INVALID",
			`invalid name "x" for a token: use 5 to 50 letters, digits or hyphens, starting with a letter or digit, and not the admin user's name`},
		{"invalid scope map name", "POST", "/acr/v1/_scopemaps", `{"name":"_mine","actions":["repositories/x/content/read"]}`, http.StatusBadRequest, "NAME_INVALID",
			`invalid name "_mine" for a scope map: use 5 to 50 letters, digits, hyphens or underscores, starting with a letter or digit`},
		{"token without a scope map", "POST", "/acr/v1/_tokens", `{"name":"ci-token"}`, http.StatusBadRequest, "INVALID_REQUEST",
			"invalid request: scopeMapId is required"},
		{"bad token status", "PATCH", "/acr/v1/_tokens/node-pull", `{"status":"off"}`, http.StatusBadRequest, "INVALID_REQUEST",
			"invalid request: status must be enabled or disabled"},
		{"token expiring in the past", "POST", "/acr/v1/_tokens", `{"name":"ci-token","scopeMapId":"_repositories_pull","expiry":"2020-01-31T00:00:00Z"}`,
			http.StatusBadRequest, "INVALID_REQUEST", "invalid expiry: 2020-01-31T00:00:00Z is not in the future: give a later expiry, or none for passwords that do not expire"},
		{"password expiring in the past", "POST", "/acr/v1/_tokens/node-pull/_credentials", `{"name":"password1","expiry":"2020-01-31T00:00:00Z"}`,
			http.StatusBadRequest, "INVALID_REQUEST", "invalid expiry: 2020-01-31T00:00:00Z is not in the future: give a later expiry, or none for passwords that do not expire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := admin.expect(tt.method, tt.path, tt.body, tt.wantCode)
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal([]byte(r.body), &e); err != nil || len(e.Errors) != 1 {
				t.Fatalf("error body %q", r.body)
			}
			if e.Errors[0].Code != tt.wantError || e.Errors[0].Message != tt.wantMessage {
				t.Errorf("got %s: %q\nwant %s: %q", e.Errors[0].Code, e.Errors[0].Message, tt.wantError, tt.wantMessage)
			}
		})
	}
}
