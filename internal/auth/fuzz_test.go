package auth

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"repository:a/b:pull,push", "registry:catalog:*", "repository(plugin):x:pull", "a:b", ":::", "repository:a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, ErrScopeInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if (a.Type != TypeRepository && a.Type != TypeRegistry) || a.Name == "" || len(a.Actions) == 0 {
			t.Fatalf("accepted %q as %+v", s, a)
		}
		for _, act := range a.Actions {
			if act == "" || strings.ContainsAny(act, ", ") {
				t.Fatalf("bad action %q from %q", act, s)
			}
		}
		// Rendering and parsing again gives the same access.
		again, err := ParseScope(a.String())
		if err != nil || again.String() != a.String() {
			t.Fatalf("round trip of %q: %+v %v", s, again, err)
		}
	})
}

func FuzzParseAction(f *testing.F) {
	for _, s := range []string{"repositories/*/content/read", "repositories/a/b*/metadata/write", "repositories//x/y", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, a, err := ParseAction(s)
		if err != nil {
			if !errors.Is(err, ErrActionInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if p == "" || a == "" || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			t.Fatalf("accepted %q as %q %q", s, p, a)
		}
	})
}
