package cli

import (
	"reflect"
	"strings"
	"testing"
)

func TestRewriteArgs(t *testing.T) {
	root := NewRootCommand(&App{Getenv: func(string) string { return "" }})
	f := strings.Fields
	tests := []struct {
		in   string
		want []string
	}{
		{"acr repository list", f("repository list")},
		{"__complete acr repository l", f("__complete repository l")},
		{"artifact-streaming update --repository r --enable-streaming true", f("artifact-streaming update --repository r --enable-streaming=true")},
		{"acr artifact-streaming update --enable-streaming False --repository r", f("artifact-streaming update --enable-streaming=False --repository r")},
		{"artifact-streaming update --enable-streaming --repository r", f("artifact-streaming update --enable-streaming --repository r")},
		{"repository list --teleport-enabled", f("repository list --teleport-enabled")},
		{"scope-map create -n m --repository team/* content/read content/write --repository x metadata/read --description d",
			[]string{"scope-map", "create", "-n", "m", "--repository", "team/* content/read content/write", "--repository", "x metadata/read", "--description", "d"}},
		{"repository show --repository team/app", f("repository show --repository team/app")},
		{"token create -n t --repository r content/read -- --x", []string{"token", "create", "-n", "t", "--repository", "r content/read", "--", "--x"}},
	}
	for _, tt := range tests {
		if got := rewriteArgs(root, f(tt.in)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("rewriteArgs(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestParseImage(t *testing.T) {
	tests := []struct {
		in                string
		repo, tag, digest string
		bad               bool
	}{
		{in: "team/app:1.0", repo: "team/app", tag: "1.0"},
		{in: "team/app", repo: "team/app", tag: "latest"},
		{in: "localhost:5000/app", repo: "localhost:5000/app", tag: "latest"},
		{in: "team/app@sha256:abc", repo: "team/app", digest: "sha256:abc"},
		{in: "team/app@abc", bad: true},
		{in: ":1.0", bad: true},
		{in: "http://x/app:1", bad: true},
	}
	for _, tt := range tests {
		r, err := parseImage(tt.in)
		if tt.bad != (err != nil) {
			t.Errorf("parseImage(%q): err %v", tt.in, err)
			continue
		}
		if !tt.bad && (r.Repository != tt.repo || r.Tag != tt.tag || r.Digest != tt.digest) {
			t.Errorf("parseImage(%q) = %+v", tt.in, r)
		}
	}
}

func TestRegistryResolution(t *testing.T) {
	c := &userConfig{Registries: []registryEntry{{Name: "myreg", URL: "http://127.0.0.1:5000"}, {Name: "prod", URL: "https://registry.example.com"}}}
	a := &App{conf: c, Getenv: func(string) string { return "" }}
	tests := []struct {
		in, name, url string
		bad           bool
	}{
		{in: "myreg", name: "myreg", url: "http://127.0.0.1:5000"},
		{in: "127.0.0.1:5000", name: "myreg", url: "http://127.0.0.1:5000"},
		{in: "myreg.azurecr.io", name: "myreg", url: "http://127.0.0.1:5000"},
		{in: "registry.example.com", name: "prod", url: "https://registry.example.com"},
		{in: "other.example.com:8443", name: "other.example.com:8443", url: "https://other.example.com:8443"},
		{in: "localhost:5001", name: "localhost:5001", url: "http://localhost:5001"},
		{in: "http://10.0.0.1:5000", name: "10.0.0.1:5000", url: "http://10.0.0.1:5000"},
		{in: "nosuchname", bad: true},
		{in: "ftp://x", bad: true},
	}
	for _, tt := range tests {
		r, err := a.resolveRegistry(tt.in)
		if tt.bad != (err != nil) {
			t.Errorf("resolveRegistry(%q): err %v", tt.in, err)
			continue
		}
		if !tt.bad && (r.Name != tt.name || r.URL.String() != tt.url) {
			t.Errorf("resolveRegistry(%q) = %s %s, want %s %s", tt.in, r.Name, r.URL, tt.name, tt.url)
		}
	}
	for in, want := range map[string][2]string{
		"myreg/team/app:1":             {"myreg", "team/app:1"},
		"library/python:3":             {"", "library/python:3"},
		"python":                       {"", "python"},
		"127.0.0.1:5000/app:1":         {"127.0.0.1:5000", "app:1"},
		"http://h:1/a/b@sha256:x":      {"http://h:1", "a/b@sha256:x"},
		"myreg.azurecr.io/team/app:1":  {"myreg.azurecr.io", "team/app:1"},
		"registry.example.com/team/ap": {"registry.example.com", "team/ap"},
	} {
		if reg, rest := c.splitRegistry(in); reg != want[0] || rest != want[1] {
			t.Errorf("splitRegistry(%q) = %q, %q; want %q", in, reg, rest, want)
		}
	}
}
