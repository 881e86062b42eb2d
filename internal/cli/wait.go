package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/client"
)

// operation is what the waiting loop reads of an operation's JSON.
type operation struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Resource      string `json:"resource"`
	Status        string `json:"status"`
	Progress      string `json:"progress"`
	ProgressBytes int64  `json:"progressBytes"`
	TotalBytes    int64  `json:"totalBytes"`
	Details       string `json:"details"`
	Error         *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (op *operation) active() bool { return op.Status == "NotStarted" || op.Status == "Running" }

// Poll intervals: quick at first (conversions of small images take
// moments), growing to a few seconds for long ones.
const (
	pollFirst = 200 * time.Millisecond
	pollMax   = 3 * time.Second
)

// waitOperation polls an operation (GET path) until it leaves NotStarted
// and Running, drawing a progress bar on a terminal. It returns the final
// JSON. On Ctrl-C it stops waiting, cancels nothing, and says how to follow
// or cancel the operation (the commands in follow).
func (a *App) waitOperation(ctx context.Context, cl *client.Client, path string, first json.RawMessage, follow waitHints) (json.RawMessage, error) {
	var op operation
	if err := json.Unmarshal(first, &op); err != nil {
		return nil, fmt.Errorf("operation: %w", err)
	}
	raw := first
	bar := newProgressBar(a, follow.label)
	defer bar.clear()
	interval := pollFirst
	for op.active() {
		bar.draw(&op)
		select {
		case <-ctx.Done():
			bar.clear()
			fmt.Fprintf(a.Stderr, "Stopped waiting; the operation %s goes on in the registry (%s, %s).\n  Follow it:  %s\n  Cancel it:  %s\n",
				op.ID, op.Status, op.Progress, follow.show, follow.cancel)
			return nil, errInterrupted
		case <-time.After(interval):
		}
		interval = min(interval*3/2, pollMax)
		b, _, err := cl.API(ctx, "GET", path, nil, nil)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			return nil, err
		}
		var next operation
		if err := json.Unmarshal(b, &next); err != nil {
			return nil, fmt.Errorf("operation %s: %w", op.ID, err)
		}
		op, raw = next, b
	}
	return raw, nil
}

// longOperation is a request that starts an operation (a conversion or
// an import) and how to report it.
type longOperation struct {
	path   string // POST here, with body
	body   any
	repo   string // the operation's repository; "" for an import
	what   string // "converting team/app:1.0", for errors
	label  string // on the progress bar
	noWait bool
}

// startOperation starts an operation and, unless noWait, waits for it;
// it prints the operation (the final one after waiting) and fails if the
// operation did.
func (a *App) startOperation(ctx context.Context, lo longOperation) error {
	reg, err := a.registry()
	if err != nil {
		return err
	}
	cl := a.Client(ctx, reg)
	b, hdr, err := cl.API(ctx, "POST", lo.path, nil, lo.body)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == "TAG_ALREADY_EXISTS" {
		ce.Message = strings.Replace(ce.Message, "import with mode Force", "import with --force", 1)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", lo.what, err)
	}
	var op operation
	if err := json.Unmarshal(b, &op); err != nil {
		return fmt.Errorf("%s: %w", lo.what, err)
	}
	hints := a.operationHints(reg, lo.repo, op.ID, lo.label)
	if lo.noWait || !op.active() {
		if op.active() {
			a.hint("Queued. Follow it with: %s", hints.show)
		}
		return a.printOperation(b)
	}
	path := hdr.Get("Operation-Location")
	if path == "" {
		path = operationPath(lo.repo, op.ID)
	}
	final, err := a.waitOperation(ctx, cl, path, b, hints)
	if err != nil {
		return err
	}
	return a.printOperation(final)
}

// operationPath is where an operation is read: below its repository, or
// the registry's for an import (repo "").
func operationPath(repo, id string) string {
	if repo == "" {
		return "/acr/v1/_operations/" + url.PathEscape(id)
	}
	return "/acr/v1/" + repo + "/_operations/" + url.PathEscape(id)
}

// printOperation prints an operation and returns its failure, if it failed.
func (a *App) printOperation(raw json.RawMessage) error {
	if err := a.print(raw, operationTable); err != nil {
		return err
	}
	return operationError(raw)
}

// operationHints are the commands that follow and cancel an operation;
// repo is "" for a registry-level operation (an import).
func (a *App) operationHints(reg *Registry, repo, id, label string) waitHints {
	sel := "--id " + id
	if repo != "" {
		sel = "--repository " + repo + " " + sel
	}
	prefix := "sluice artifact-streaming operation"
	return waitHints{label: label,
		show:   fmt.Sprintf("%s show -r %s %s", prefix, reg.Name, sel),
		cancel: fmt.Sprintf("%s cancel -r %s %s", prefix, reg.Name, sel)}
}

// waitHints name an operation on its progress bar and give the commands
// that follow and cancel it.
type waitHints struct{ label, show, cancel string }

// operationError is the error of an operation that did not succeed.
func operationError(raw json.RawMessage) error {
	var op operation
	if json.Unmarshal(raw, &op) != nil || op.Status == "Succeeded" || op.active() {
		return nil
	}
	what := strings.TrimPrefix(op.Name, "Cancel: ")
	if op.Error != nil && op.Error.Code != "" {
		return fmt.Errorf("%s %s %s: %s: %s", what, op.ID, strings.ToLower(op.Status), op.Error.Code, op.Error.Message)
	}
	return fmt.Errorf("%s %s %s: %s", what, op.ID, strings.ToLower(op.Status), op.Details)
}

// progressBar draws an operation's progress on stderr when it is a
// terminal: a bar, the percentage, bytes done of the total, time elapsed.
type progressBar struct {
	a     *App
	label string
	start time.Time
	on    bool
	drawn bool
}

func newProgressBar(a *App, label string) *progressBar {
	if label == "" {
		label = "Operation"
	}
	return &progressBar{a: a, label: label, start: time.Now(), on: a.interactive()}
}

const barWidth = 30

func (p *progressBar) draw(op *operation) {
	if !p.on {
		return
	}
	var pct int64
	switch {
	case op.TotalBytes > 0:
		pct = min(100, op.ProgressBytes*100/op.TotalBytes)
	default:
		fmt.Sscanf(strings.TrimSuffix(op.Progress, "%"), "%d", &pct)
	}
	filled := int(pct) * barWidth / 100
	bar := strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled)
	bytes := ""
	if op.TotalBytes > 0 {
		bytes = fmt.Sprintf("  %s / %s", humanBytes(op.ProgressBytes), humanBytes(op.TotalBytes))
	}
	elapsed := time.Since(p.start).Round(time.Second)
	fmt.Fprintf(p.a.Stderr, "\r\x1b[K%s [%s] %3d%%%s  %s  %s", p.label, bar, pct, bytes, formatElapsed(elapsed), op.Status)
	p.drawn = true
}

func (p *progressBar) clear() {
	if p.drawn {
		fmt.Fprint(p.a.Stderr, "\r\x1b[K")
		p.drawn = false
	}
}

func formatElapsed(d time.Duration) string {
	s := int(d.Seconds())
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// humanBytes is a size in B, KB, MB, GB (powers of 1000, like docker).
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KB", "MB", "GB", "TB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f PB", f/unit)
}
