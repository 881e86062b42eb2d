package portal

import (
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

// parsePages parses each page template with the layout and the shared
// partials; a template that does not parse is a bug, so it panics.
func parsePages() map[string]*template.Template {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/_*.html"))
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if strings.HasPrefix(name, "_") {
			continue
		}
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, f))
	}
	return pages
}

var funcs = template.FuncMap{
	"bytes":       humanBytes,
	"ago":         ago,
	"when":        func(t time.Time) string { return when(t) },
	"short":       shortDigest,
	"percent":     percent,
	"progress":    progress,
	"duration":    opDuration,
	"imagePath":   imagePath,
	"repoPath":    repoPath,
	"pull":        pullCommands,
	"statusClass": statusClass,
	"join":        strings.Join,
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
}

// humanBytes writes a size in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ago says how long ago t was, roughly.
func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// when is a timestamp for a title attribute.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// shortDigest is a digest's algorithm and first 12 hex digits.
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}

// percent is an operation's progress as a number from 0 to 100.
func percent(op *metadata.Operation) int {
	switch {
	case op.Status == metadata.StatusSucceeded:
		return 100
	case op.TotalBytes <= 0:
		return 0
	}
	return int(min(op.ProgressBytes*100/op.TotalBytes, 99))
}

// progress is an operation's progress in words.
func progress(op *metadata.Operation) string {
	if op.TotalBytes <= 0 {
		return fmt.Sprintf("%d%%", percent(op))
	}
	return fmt.Sprintf("%d%% (%s of %s)", percent(op), humanBytes(op.ProgressBytes), humanBytes(op.TotalBytes))
}

// opDuration is how long an operation ran, or has been running.
func opDuration(op *metadata.Operation) string {
	start := op.StartedAt
	if start.IsZero() {
		return "—"
	}
	end := op.FinishedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(start).Round(100 * time.Millisecond).String()
}

// statusClass is the badge style of a status or state.
func statusClass(s string) string {
	switch s {
	case metadata.StatusSucceeded, "ready", "Active":
		return "ok"
	case metadata.StatusFailed, "failed":
		return "bad"
	case metadata.StatusRunning, metadata.StatusNotStarted, "converting":
		return "busy"
	}
	return "none"
}
