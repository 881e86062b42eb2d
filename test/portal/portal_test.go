//go:build linux

// Package portal_test drives the web portal of a real sluiced in Debian's
// Chromium (headless, through chromedp), as a user following the setup
// guide's portal method does: sign in, Start artifact streaming, push an
// image with a real client and watch its streaming artifact appear, Create
// streaming artifact on an older image, the Referrers tab, Cancel a long
// conversion, Stop artifact streaming, restore a deleted image, create a
// token; and as a pull-only token, which sees no write buttons and whose
// forged posts are refused. It takes a screenshot of each page; with
// SLUICE_PORTAL_SCREENSHOTS=DIR (make portal-screenshots) they are kept
// there, as docs/portal/ keeps them.
package portal_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/internal/testenv"
)

const adminPassword = "portal-admin-pw"

// browser is a Chromium tab on a registry.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // where screenshots go
}

func TestPortal(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	testenv.Need(t, err == nil, "chromium is not installed (make test-deps installs it)")
	_, err = exec.LookPath("skopeo")
	testenv.Need(t, err == nil, "skopeo is not installed (make test-deps installs it)")

	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	testenv.Build(t, bin, "github.com/sluicehq/sluice/cmd/sluiced", "github.com/sluicehq/sluice/test/cli/mkimage")
	host := testenv.StartSluiced(t, filepath.Join(bin, "sluiced"), filepath.Join(work, "data"), adminPassword, "SLUICE_SOFT_DELETE_ENABLED=true")
	mkimage := func(kind, tag string) string {
		dir := filepath.Join(work, "images", kind+"-"+tag)
		if out, err := exec.Command(filepath.Join(bin, "mkimage"), dir, kind, tag).CombinedOutput(); err != nil {
			t.Fatalf("mkimage %s: %v\n%s", kind, err, out)
		}
		return "oci:" + dir + ":" + tag
	}
	push := func(src, dst string) {
		t.Helper()
		out, err := exec.Command("skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-creds", "admin:"+adminPassword,
			src, "docker://"+host+"/"+dst).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo copy %s %s: %v\n%s", src, dst, err, out)
		}
	}
	push(mkimage("app", "1.0"), "team/app:1.0")
	push(mkimage("large", "1"), "team/big:1")

	b := newBrowser(t, chromium, "http://"+host)

	// Sign in: the portal sends a browser without a session to the
	// sign-in page, and back where it was going.
	b.do("open the repositories", chromedp.Navigate(b.base+"/repositories"))
	b.waitText("h1", "Sign in")
	b.signIn("admin", adminPassword)
	b.waitText("h1", "Repositories")
	b.screenshot("repositories")

	// Start artifact streaming: the repository shows Active.
	b.do("open team/app", chromedp.Click(chromedp.CSS(`a[href="/repositories/team/app"]`)))
	b.waitText("#streaming-state", "Inactive")
	b.do("start artifact streaming",
		chromedp.Click(chromedp.CSS(`details.confirm summary`)),
		chromedp.Click(chromedp.CSS(`button[name="streaming"][value="start"]`)))
	b.waitText("#streaming-state", "Active")

	// A push with a real client: its streaming artifact shows on the
	// open page without a reload.
	b.do("mark the page", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`window.sluiceNoReload = true`)(ctx, tg)
		return err
	}))
	push(mkimage("app", "2.0"), "team/app:2.0")
	b.poll("the pushed image's streaming artifact is ready", `(() => { const b = document.querySelector('tr[data-tag="2.0"] .state .badge'); return !!b && b.textContent === 'ready'; })()`, 90*time.Second)
	if !b.eval(`window.sluiceNoReload === true`) {
		t.Fatal("the page was reloaded to show the streaming artifact")
	}
	b.screenshot("repository")
	b.do("repository on a phone", chromedp.EmulateViewport(390, 844))
	b.screenshot("repository-phone")
	b.do("back to a laptop", chromedp.EmulateViewport(1280, 900))

	// Create streaming artifact on the older image: progress reaches
	// Succeeded on its page.
	b.do("open team/app:1.0", chromedp.Click(chromedp.CSS(`tr[data-tag="1.0"] td a`)))
	b.waitText("#artifact-state", "none")
	b.do("create streaming artifact", chromedp.Click(chromedp.CSS(`#create-artifact`)))
	b.poll("the conversion succeeded", `(() => { const s = document.querySelector('#operation-status'); return !!s && s.textContent === 'Succeeded'; })()`, 90*time.Second)
	b.waitText("#artifact-state", "ready")
	b.screenshot("image")

	// The Referrers tab lists the streaming artifact.
	b.do("open the Referrers tab", chromedp.Click(chromedp.CSS(`#tab-referrers`)))
	b.poll("the referrers list the streaming artifact", `[...document.querySelectorAll('#referrers code.artifact-type')].some(c => c.textContent === 'application/vnd.azure.artifact.streaming.v1')`, 30*time.Second)
	b.screenshot("image-referrers")

	// Cancel during the conversion of a large image.
	b.do("open team/big:1", chromedp.Navigate(b.base+"/repositories/team/big"))
	b.do("open its tag", chromedp.Click(chromedp.CSS(`tr[data-tag="1"] td a`)))
	b.do("convert the large image", chromedp.Click(chromedp.CSS(`#create-artifact`)))
	b.poll("the conversion can be canceled", `!!document.querySelector('#operation form[action$="/_cancel"] button')`, 30*time.Second)
	b.screenshot("image-converting")
	b.do("cancel it", chromedp.Click(chromedp.CSS(`#operation form[action$="/_cancel"] button`)))
	b.poll("the conversion is canceled", `(() => { const s = document.querySelector('#operation-status'); return !!s && s.textContent === 'Canceled'; })()`, 60*time.Second)

	// Stop artifact streaming: Inactive.
	b.do("open team/app again", chromedp.Navigate(b.base+"/repositories/team/app"))
	b.do("stop artifact streaming",
		chromedp.Click(chromedp.CSS(`details.confirm summary`)),
		chromedp.Click(chromedp.CSS(`button[name="streaming"][value="stop"]`)))
	b.waitText("#streaming-state", "Inactive")

	// Restore a soft-deleted image under a new tag.
	dgst := manifestDigest(t, host, "team/app", "1.0")
	req, _ := http.NewRequest(http.MethodDelete, "http://"+host+"/v2/team/app/manifests/"+dgst, nil)
	req.SetBasicAuth("admin", adminPassword)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusAccepted {
		t.Fatalf("delete team/app@%s: %v %v", dgst, err, r)
	}
	b.do("open Deleted", chromedp.Navigate(b.base+"/deleted"))
	b.screenshot("deleted")
	b.do("restore as team/app:restored",
		chromedp.SendKeys(chromedp.CSS(`input[id="tag-`+dgst+`"]`), "restored"),
		chromedp.Click(chromedp.CSS(`form[action$="/_deleted/`+dgst+`/_restore"] button`)))
	b.waitText(".flash", "Image restored as team/app:restored.")
	if got := manifestDigest(t, host, "team/app", "restored"); got != dgst {
		t.Fatalf("team/app:restored is %s, want %s", got, dgst)
	}

	b.do("open Operations", chromedp.Navigate(b.base+"/operations"))
	b.screenshot("operations")

	// A token that may only pull and read metadata.
	b.do("open Access", chromedp.Navigate(b.base+"/access"))
	b.screenshot("access")
	b.do("create a read-only token",
		chromedp.Click(chromedp.CSS(`details.create summary`)),
		chromedp.SendKeys(chromedp.CSS(`#token-name`), "viewer-1"),
		chromedp.SetValue(chromedp.CSS(`#token-map`), "_repositories_pull_metadata_read"),
		chromedp.Click(chromedp.CSS(`form[action="/access/tokens"] button[type="submit"]`)))
	b.waitText("#created-h", "Passwords of viewer-1")
	password := b.evalString(`document.querySelector('.secret li code').textContent`)

	b.do("open the overview", chromedp.Navigate(b.base+"/"))
	b.screenshot("overview")
	b.do("dark", colorScheme("dark"))
	b.do("open team/app:2.0", chromedp.Navigate(b.base+"/repositories/team/app"), chromedp.Click(chromedp.CSS(`tr[data-tag="2.0"] td a`)))
	b.waitText("#artifact-state", "ready")
	b.screenshot("image-dark")
	b.do("light", colorScheme(""))

	// Sign out, and in as the token.
	b.do("sign out", chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)))
	b.waitText("h1", "Sign in")
	b.signIn("viewer-1", password)
	b.waitText("h1", "Overview")
	if b.eval(`!!document.querySelector('a[href="/access"]')`) {
		t.Error("a token's session is offered the Access page")
	}
	b.do("open team/app as the token", chromedp.Navigate(b.base+"/repositories/team/app"))
	b.waitText("#streaming-state", "Inactive")
	for _, sel := range []string{`details.confirm`, `form[action$="/_attributes"] button`} {
		if b.eval(`!!document.querySelector(` + jsString(sel) + `)`) {
			t.Errorf("a pull-only session sees %s on the repository page", sel)
		}
	}
	b.do("open an image as the token", chromedp.Click(chromedp.CSS(`tr[data-tag="2.0"] td a`)))
	b.waitText("#artifact-state", "ready")
	if b.eval(`!!document.querySelector('#create-artifact, form[action$="/_cancel"], form[action$="/_forget"]')`) {
		t.Error("a pull-only session sees write buttons on the image page")
	}
	// Forged posts, without and with the session's CSRF token, are
	// refused: the session may not write, whatever the form says.
	for _, withToken := range []bool{false, true} {
		body := `'streaming=start'`
		if withToken {
			body = `'streaming=start&csrf=' + encodeURIComponent(document.querySelector('input[name=csrf]').value)`
		}
		status := b.evalInt(`fetch('/repositories/team/app/_streaming', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: ` + body + `, redirect: 'manual'}).then(r => r.status)`)
		if status != http.StatusForbidden {
			t.Errorf("a pull-only session's forged post (CSRF token %v): %d, want 403", withToken, status)
		}
	}
	if streaming := repositoryStreaming(t, host, "team/app"); streaming {
		t.Error("a forged post started artifact streaming")
	}
}

// colorScheme makes the page's prefers-color-scheme dark or light ("":
// the system's).
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var features []*emulation.MediaFeature
		if scheme != "" {
			features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}
		}
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: features})
		return err
	})
}

func newBrowser(t *testing.T, chromium, base string) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser; it must not have a timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	shot := os.Getenv("SLUICE_PORTAL_SCREENSHOTS")
	if shot == "" {
		shot = t.TempDir()
	} else if err := os.MkdirAll(shot, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, base: base, shot: shot}
}

// do runs steps, failing the test with what it was doing.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (page: %s)", what, err, b.page())
	}
}

func (b *browser) signIn(user, password string) {
	b.t.Helper()
	b.do("sign in as "+user,
		chromedp.SendKeys(chromedp.CSS(`#username`), user),
		chromedp.SendKeys(chromedp.CSS(`#password`), password),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button[type="submit"]`)))
}

// waitText waits until the element's text is want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	b.poll(sel+" says "+want, `(() => { const e = document.querySelector(`+jsString(sel)+`); return !!e && e.textContent.trim() === `+jsString(want)+`; })()`, 30*time.Second)
}

// poll waits until the expression is true. It evaluates it again and
// again rather than with the browser's own polling, which a navigation
// (a form's redirect) interrupts.
func (b *browser) poll(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("waiting until %s: timed out (last error %v; page: %s)", what, last, b.page())
}

func (b *browser) eval(expr string) bool {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) evalString(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) evalInt(expr string) int {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// page is the open page's address and main text, for failure messages.
func (b *browser) page() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.querySelector('main') || document.body).innerText.slice(0, 1500)`))
	if err != nil {
		return err.Error()
	}
	return v
}

// screenshot saves the page as NAME.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shot, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// manifestDigest reads the digest of repo:tag through the API.
func manifestDigest(t *testing.T, host, repo, tag string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.SetBasicAuth("admin", adminPassword)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	r, err := http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s:%s: %v %v", repo, tag, err, r)
	}
	return r.Header.Get("Docker-Content-Digest")
}

// repositoryStreaming reads whether a repository streams, through the
// management API.
func repositoryStreaming(t *testing.T, host, repo string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/acr/v1/"+repo+"/_streaming", nil)
	req.SetBasicAuth("admin", adminPassword)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var v struct {
		ConvertPushedImages bool `json:"convertPushedImages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.ConvertPushedImages
}
