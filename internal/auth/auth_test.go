package auth

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in   string
		want Access
		err  bool
	}{
		{"repository:team/app:pull", Access{TypeRepository, "team/app", []string{"pull"}}, false},
		{"repository:team/app:pull,push", Access{TypeRepository, "team/app", []string{"pull", "push"}}, false},
		{"repository:app:pull,pull,", Access{TypeRepository, "app", []string{"pull"}}, false},
		{"repository(plugin):app:pull", Access{TypeRepository, "app", []string{"pull"}}, false},
		{"registry:catalog:*", Access{TypeRegistry, "catalog", []string{"*"}}, false},
		{"repository:App:pull", Access{}, true},
		{"repository:app", Access{}, true},
		{"repository:app:", Access{}, true},
		{"repository::pull", Access{}, true},
		{"blob:x:pull", Access{}, true},
		{"", Access{}, true},
		{":::", Access{}, true},
	}
	for _, tc := range tests {
		got, err := ParseScope(tc.in)
		if tc.err {
			if !errors.Is(err, ErrScopeInvalid) {
				t.Errorf("ParseScope(%q) = %v, %v; want ErrScopeInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseScope(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	merged, err := ParseScopes([]string{"repository:a:push repository:a:pull", "repository:b:pull"})
	if err != nil || len(merged) != 2 || !reflect.DeepEqual(merged[0].Actions, []string{"pull", "push"}) {
		t.Fatalf("ParseScopes merge: %+v %v", merged, err)
	}
}

func TestScopeMapActions(t *testing.T) {
	tests := []struct {
		in              string
		pattern, action string
		err             bool
	}{
		{"repositories/*/content/read", "*", ActionPull, false},
		{"repositories/team-a/*/content/write", "team-a/*", ActionPush, false},
		{"repositories/team-a/app/content/delete", "team-a/app", ActionDelete, false},
		{"repositories/team-a/app*/metadata/read", "team-a/app*", ActionMetadataRead, false},
		{"repositories/x/metadata/write", "x", ActionMetadataWrite, false},
		{"repositories/x/content/execute", "", "", true},
		{"repositories/*/x*/content/read", "", "", true},
		{"repositories/Team/content/read", "", "", true},
		{"repository/x/content/read", "", "", true},
		{"repositories/content/read", "", "", true},
		{"repositories//content/read", "", "", true},
	}
	for _, tc := range tests {
		p, a, err := ParseAction(tc.in)
		if tc.err {
			if !errors.Is(err, ErrActionInvalid) {
				t.Errorf("ParseAction(%q) = %q %q %v; want an error", tc.in, p, a, err)
			}
			continue
		}
		if err != nil || p != tc.pattern || a != tc.action {
			t.Errorf("ParseAction(%q) = %q %q %v", tc.in, p, a, err)
		}
	}
}

func TestGrants(t *testing.T) {
	grants, err := parseGrants([]string{"repositories/team-a/*/content/read", "repositories/team-a/*/content/write", "repositories/shared/content/read"})
	if err != nil {
		t.Fatal(err)
	}
	id := &Identity{Kind: TokenUser, Name: "dev", grants: grants}
	for _, tc := range []struct {
		repo, action string
		want         bool
	}{
		{"team-a/app", ActionPull, true},
		{"team-a/deep/app", ActionPush, true},
		{"team-a/app", ActionDelete, false},
		{"team-ab/app", ActionPull, false},
		{"team-a", ActionPull, false},
		{"shared", ActionPull, true},
		{"shared/sub", ActionPull, false},
		{"other", ActionPull, false},
	} {
		if got := id.Allowed(tc.repo, tc.action); got != tc.want {
			t.Errorf("Allowed(%s, %s) = %v", tc.repo, tc.action, got)
		}
	}
	granted := id.Grant([]Access{
		{TypeRepository, "team-a/app", []string{"pull", "push", "delete"}},
		{TypeRepository, "other", []string{"pull"}},
		{TypeRepository, "shared", []string{"*"}},
		{TypeRegistry, Catalog, []string{"*"}},
		{TypeRegistry, Admin, []string{"*"}},
	})
	want := []Access{
		{TypeRegistry, Catalog, []string{"*"}},
		{TypeRepository, "shared", []string{"pull"}},
		{TypeRepository, "team-a/app", []string{"pull", "push"}},
	}
	if !reflect.DeepEqual(granted, want) {
		t.Fatalf("Grant = %+v, want %+v", granted, want)
	}
	anon := &Identity{Kind: Anonymous}
	if g := anon.Grant([]Access{{TypeRegistry, Catalog, []string{"*"}}, {TypeRepository, "x", []string{"pull"}}}); len(g) != 0 {
		t.Fatalf("anonymous without anonymous pull got %+v", g)
	}
	admin := &Identity{Kind: AdminUser}
	if !admin.Allowed("anything", ActionDelete) || len(admin.Grant([]Access{{TypeRegistry, Admin, []string{"*"}}})) != 1 {
		t.Fatal("admin is not allowed everything")
	}
}

func TestBuiltinScopeMapsParse(t *testing.T) {
	for name, actions := range BuiltinScopeMaps {
		if _, err := parseGrants(actions); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
