package snapshotter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// buildPlugin builds the test's credential provider plugin (testdata/
// credprovider) once, as "test-provider" in a directory of its own.
func buildPlugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		pluginDir, pluginErr = os.MkdirTemp("", "credprovider-")
		if pluginErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "test-provider"), "./testdata/credprovider").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("go build the plugin: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

// providerSetup writes a CredentialProviderConfig of the test plugin with
// the given matchImages, args and env.
func providerSetup(t *testing.T, bin string, match []string, args []string, env map[string]string) CredentialProvidersConfig {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: test-provider\n")
	b.WriteString("  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  defaultCacheDuration: 10m\n  matchImages:\n")
	for _, m := range match {
		fmt.Fprintf(&b, "  - %q\n", m)
	}
	b.WriteString("  args:\n")
	for _, a := range args {
		fmt.Fprintf(&b, "  - %q\n", a)
	}
	b.WriteString("  env:\n")
	for k, v := range env {
		fmt.Fprintf(&b, "  - name: %s\n    value: %q\n", k, v)
	}
	path := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return CredentialProvidersConfig{Config: path, BinDir: bin}
}

func TestCredentialProviders(t *testing.T) {
	bin := buildPlugin(t)
	for _, tc := range []struct {
		name, keyType, duration string
		// calls after asking, in order, for these repositories of
		// reg.example:5000 at these minutes
		asks      []string
		at        []int
		wantCalls []string
	}{
		{"image key", "Image", "5m",
			[]string{"team/app", "team/app", "team/other", "team/app"}, []int{0, 4, 4, 6},
			[]string{"team/app", "team/other", "team/app"}},
		{"registry key", "Registry", "5m",
			[]string{"team/app", "team/other", "team/app"}, []int{0, 1, 6},
			[]string{"team/app", "team/app"}},
		{"global key", "Global", "5m",
			[]string{"team/app", "team/other"}, []int{0, 1},
			[]string{"team/app"}},
		{"no duration: the provider's default", "Registry", "",
			[]string{"team/app", "team/app", "team/app"}, []int{0, 9, 11},
			[]string{"team/app", "team/app"}},
		{"zero duration: never kept", "Registry", "0s",
			[]string{"team/app", "team/app"}, []int{0, 0},
			[]string{"team/app", "team/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := filepath.Join(t.TempDir(), "calls")
			args := []string{tc.keyType}
			if tc.duration != "" {
				args = append(args, tc.duration)
			}
			cfg := providerSetup(t, bin, []string{"reg.example:5000/team"}, args,
				map[string]string{"CALLS_FILE": calls, "PROVIDER_USERNAME": "plugin-user", "PROVIDER_PASSWORD": "plugin-pass"})
			cp, err := LoadCredentialProviders(cfg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i, repo := range tc.asks {
				cp.now = func() time.Time { return start.Add(time.Duration(tc.at[i]) * time.Minute) }
				cred, ok, err := cp.RepositoryCredential(context.Background(), "reg.example:5000", repo)
				if err != nil || !ok || cred.Username != "plugin-user" || cred.Password != "plugin-pass" {
					t.Fatalf("ask %d (%s): %+v, %v, %v", i, repo, cred, ok, err)
				}
			}
			b, _ := os.ReadFile(calls)
			var want strings.Builder
			for _, r := range tc.wantCalls {
				want.WriteString("reg.example:5000/" + r + "\n")
			}
			if string(b) != want.String() {
				t.Errorf("the plugin was asked for\n%s\nwant\n%s", b, want.String())
			}
		})
	}
}

func TestCredentialProvidersMatch(t *testing.T) {
	bin := buildPlugin(t)
	calls := filepath.Join(t.TempDir(), "calls")
	cfg := providerSetup(t, bin, []string{"*.registry.example", "reg.example:5000/team-a"}, []string{"Image", "1h"},
		map[string]string{"CALLS_FILE": calls, "PROVIDER_USERNAME": "u", "PROVIDER_PASSWORD": "p", "PROVIDER_AUTH_KEY": "*.registry.example"})
	cp, err := LoadCredentialProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node := auth.StaticCredential("reg.example:5000", auth.Credential{Username: "node", Password: "n"})
	cred := ScopedCredential(slog.New(slog.NewTextHandler(io.Discard, nil)), node, cp)
	for _, tc := range []struct {
		host, repo string
		want       string
	}{
		{"eu.registry.example", "app", "u"},
		{"registry.example", "app", ""},            // one label fewer than the pattern
		{"a.eu.registry.example", "app", ""},       // one more
		{"reg.example:5000", "team-a/app", "node"}, // the plugin's auth key does not cover it
		{"reg.example:5000", "team-ab/app", "node"},
		{"reg.example:5001", "team-a/app", ""},
	} {
		ctx := auth.AppendScopesForHost(context.Background(), tc.host, "repository:"+tc.repo+":pull")
		got, err := cred(ctx, tc.host)
		if err != nil || got.Username != tc.want {
			t.Errorf("%s/%s: user %q (%v), want %q", tc.host, tc.repo, got.Username, err, tc.want)
		}
	}
	b, _ := os.ReadFile(calls)
	if want := "eu.registry.example/app\nreg.example:5000/team-a/app\n"; string(b) != want {
		t.Errorf("the plugin was asked for\n%s\nwant\n%s", b, want)
	}
}

func TestCredentialProvidersConfigRefused(t *testing.T) {
	bin := buildPlugin(t)
	write := func(text string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"
	for name, text := range map[string]string{
		"another kind":      "apiVersion: v1\nkind: ConfigMap\n",
		"unknown field":     head + "- name: test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n  bogus: 1\n",
		"old protocol":      head + "- name: test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1alpha1\n  matchImages: [a.example]\n",
		"no matchImages":    head + "- name: test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
		"missing plugin":    head + "- name: absent\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n",
		"a path as name":    head + "- name: ../test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n",
		"service accounts":  head + "- name: test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n  tokenAttributes: {serviceAccountTokenAudience: x}\n",
		"bad cache default": head + "- name: test-provider\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [a.example]\n  defaultCacheDuration: soon\n",
	} {
		if _, err := LoadCredentialProviders(CredentialProvidersConfig{Config: write(text), BinDir: bin}); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if cp, err := LoadCredentialProviders(CredentialProvidersConfig{}); cp != nil || err != nil {
		t.Errorf("no config: %v, %v", cp, err)
	}
	// A plugin that fails, or answers what is not a response, gives no
	// credentials and an error.
	cfg := providerSetup(t, bin, []string{"reg.example"}, []string{"Sometimes"}, nil)
	cp, err := LoadCredentialProviders(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := cp.RepositoryCredential(context.Background(), "reg.example", "app"); ok || err == nil || !strings.Contains(err.Error(), "cacheKeyType") {
		t.Errorf("a bad cacheKeyType: ok %v, %v", ok, err)
	}
	cfg = providerSetup(t, bin, []string{"reg.example"}, nil, nil)
	cp, _ = LoadCredentialProviders(cfg)
	if _, ok, err := cp.RepositoryCredential(context.Background(), "reg.example", "app"); ok || err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("a failing plugin: ok %v, %v", ok, err)
	}
}
