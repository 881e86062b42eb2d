package storetest

import (
	"slices"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// scopeMap stores a scope map named name.
func (h *harness) scopeMap(name string, builtin bool, actions ...string) {
	h.t.Helper()
	h.ok(h.s.PutScopeMap(h.ctx, &metadata.ScopeMap{Name: name, Description: "for " + name, Actions: actions, Builtin: builtin}, false))
}

var identityCases = []testCase{
	{"a user's password hash is set and replaced", func(h *harness) {
		_, err := h.s.GetUserHash(h.ctx, "admin")
		h.is(err, metadata.ErrNotFound, "the hash of a user never set")
		h.ok(h.s.SetUser(h.ctx, "admin", "hash1"))
		h.ok(h.s.SetUser(h.ctx, "admin", "hash2"))
		if got, err := h.s.GetUserHash(h.ctx, "admin"); err != nil || got != "hash2" {
			h.t.Fatalf("hash %q, %v", got, err)
		}
	}},
	{"scope maps are created once, replaced on request, listed built-in first", func(h *harness) {
		h.scopeMap("zeta", false, "repositories/a/content/read")
		h.scopeMap("_builtin", true, "repositories/*/content/read")
		h.scopeMap("alpha", false, "repositories/b/content/read", "repositories/b/content/write")
		err := h.s.PutScopeMap(h.ctx, &metadata.ScopeMap{Name: "alpha", Actions: []string{"x"}}, false)
		h.is(err, metadata.ErrExists, "creating a scope map whose name is taken")
		got, err := h.s.GetScopeMap(h.ctx, "alpha")
		h.ok(err)
		if got.Description != "for alpha" || !slices.Equal(got.Actions, []string{"repositories/b/content/read", "repositories/b/content/write"}) || got.Builtin || !got.CreatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("scope map: %+v", got)
		}
		h.clock.Advance(time.Second)
		h.ok(h.s.PutScopeMap(h.ctx, &metadata.ScopeMap{Name: "alpha", Description: "new", Actions: []string{"x"}}, true))
		got, err = h.s.GetScopeMap(h.ctx, "alpha")
		h.ok(err)
		if got.Description != "new" || !slices.Equal(got.Actions, []string{"x"}) || !got.UpdatedAt.Equal(h.clock.Now()) {
			h.t.Fatalf("replaced scope map: %+v", got)
		}
		all, err := h.s.ScopeMaps(h.ctx)
		h.ok(err)
		var names []string
		for _, m := range all {
			names = append(names, m.Name)
		}
		if !slices.Equal(names, []string{"_builtin", "alpha", "zeta"}) {
			h.t.Fatalf("scope maps %v, want [_builtin alpha zeta]", names)
		}
		_, err = h.s.GetScopeMap(h.ctx, "missing")
		h.is(err, metadata.ErrNotFound, "a missing scope map")
	}},
	{"a scope map that tokens use is not deleted", func(h *harness) {
		h.scopeMap("used", false, "a")
		h.scopeMap("free", false, "a")
		h.ok(h.s.CreateToken(h.ctx, &metadata.Token{Name: "ci", ScopeMap: "used", Enabled: true}))
		h.is(h.s.DeleteScopeMap(h.ctx, "used"), metadata.ErrInUse, "deleting a scope map in use")
		h.ok(h.s.DeleteScopeMap(h.ctx, "free"))
		h.is(h.s.DeleteScopeMap(h.ctx, "free"), metadata.ErrNotFound, "deleting a scope map again")
		h.ok(h.s.DeleteToken(h.ctx, "ci"))
		h.ok(h.s.DeleteScopeMap(h.ctx, "used"))
	}},
	{"a token keeps its scope map, status and passwords", func(h *harness) {
		h.scopeMap("pull", false, "a")
		h.scopeMap("push", false, "b")
		created := h.clock.Now().Add(-time.Hour)
		expires := h.clock.Now().Add(time.Hour)
		tok := &metadata.Token{Name: "ci", ScopeMap: "pull", Enabled: true, Passwords: []metadata.TokenPassword{
			{Name: "password2", Hash: "h2", CreatedAt: created},
			{Name: "password1", Hash: "h1", CreatedAt: created, ExpiresAt: expires},
		}}
		h.ok(h.s.CreateToken(h.ctx, tok))
		h.is(h.s.CreateToken(h.ctx, &metadata.Token{Name: "ci", ScopeMap: "pull"}), metadata.ErrExists, "creating a token whose name is taken")
		h.is(h.s.CreateToken(h.ctx, &metadata.Token{Name: "other", ScopeMap: "missing"}), metadata.ErrNotFound, "creating a token of a missing scope map")
		got, err := h.s.GetToken(h.ctx, "ci")
		h.ok(err)
		if got.ScopeMap != "pull" || !got.Enabled || len(got.Passwords) != 2 {
			h.t.Fatalf("token: %+v", got)
		}
		p1, p2 := got.Passwords[0], got.Passwords[1]
		if p1.Name != "password1" || p1.Hash != "h1" || !p1.ExpiresAt.Equal(expires) || !p1.CreatedAt.Equal(created) || p2.Name != "password2" || !p2.ExpiresAt.IsZero() {
			h.t.Fatalf("passwords in name order: %+v", got.Passwords)
		}

		h.ok(h.s.SetTokenPassword(h.ctx, "ci", metadata.TokenPassword{Name: "password2", Hash: "new", CreatedAt: h.clock.Now()}))
		h.is(h.s.SetTokenPassword(h.ctx, "missing", metadata.TokenPassword{Name: "password1", Hash: "x"}), metadata.ErrNotFound, "a password of a missing token")
		push := "push"
		h.ok(h.s.UpdateToken(h.ctx, "ci", &push, boolPtr(false)))
		h.ok(h.s.UpdateToken(h.ctx, "ci", nil, nil))
		got, err = h.s.GetToken(h.ctx, "ci")
		h.ok(err)
		if got.ScopeMap != "push" || got.Enabled || got.Passwords[1].Hash != "new" {
			h.t.Fatalf("updated token: %+v", got)
		}
		missing := "missing"
		h.is(h.s.UpdateToken(h.ctx, "ci", &missing, nil), metadata.ErrNotFound, "moving a token to a missing scope map")
		h.is(h.s.UpdateToken(h.ctx, "nobody", nil, boolPtr(true)), metadata.ErrNotFound, "updating a missing token")
	}},
	{"tokens are listed by name and deleted with their passwords", func(h *harness) {
		if toks, err := h.s.Tokens(h.ctx); err != nil || toks == nil || len(toks) != 0 {
			h.t.Fatalf("tokens of an empty store: %#v, %v", toks, err)
		}
		h.scopeMap("pull", false, "a")
		for _, name := range []string{"zz", "aa", "mm"} {
			h.ok(h.s.CreateToken(h.ctx, &metadata.Token{Name: name, ScopeMap: "pull", Enabled: true,
				Passwords: []metadata.TokenPassword{{Name: "password1", Hash: name}}}))
		}
		toks, err := h.s.Tokens(h.ctx)
		h.ok(err)
		var names []string
		for _, t := range toks {
			names = append(names, t.Name)
			if len(t.Passwords) != 1 || t.Passwords[0].Hash != t.Name {
				h.t.Fatalf("token %s listed with passwords %+v", t.Name, t.Passwords)
			}
		}
		if !slices.Equal(names, []string{"aa", "mm", "zz"}) {
			h.t.Fatalf("tokens %v", names)
		}
		h.ok(h.s.DeleteToken(h.ctx, "mm"))
		h.is(h.s.DeleteToken(h.ctx, "mm"), metadata.ErrNotFound, "deleting a token again")
		_, err = h.s.GetToken(h.ctx, "mm")
		h.is(err, metadata.ErrNotFound, "a deleted token")
		h.ok(h.s.CreateToken(h.ctx, &metadata.Token{Name: "mm", ScopeMap: "pull"}))
		if got, _ := h.s.GetToken(h.ctx, "mm"); len(got.Passwords) != 0 {
			h.t.Fatalf("a token made again has the old one's passwords: %+v", got.Passwords)
		}
	}},
}
