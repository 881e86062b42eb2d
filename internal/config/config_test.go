package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/streaming"
)

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluiced.yaml")
	if err := os.WriteFile(file, []byte("listen: 0.0.0.0:6000\ndata: /srv/sluice\ngc:\n  gracePeriod: 2h\nlog:\n  format: json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, []string{"SLUICE_DATA=/env/data", "SLUICE_GC_UPLOAD_TTL=90m", "SLUICE_LOG_ACCESS=false", "OTHER=1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:6000" || c.Data != "/env/data" || c.GC.GracePeriod.Std() != 2*time.Hour ||
		c.GC.UploadTTL.Std() != 90*time.Minute || c.GC.Interval.Std() != time.Hour || c.Log.Format != "json" || c.Log.Access {
		t.Fatalf("loaded %+v", c)
	}
	if c.BlobURL() != "file:///env/data/blobs" || c.DatabaseFile() != "/env/data/sluice.db" {
		t.Fatalf("derived paths %s %s", c.BlobURL(), c.DatabaseFile())
	}
}

// An empty variable counts as unset, so the file's setting (or the default)
// stays.
func TestEmptyEnvIsUnset(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sluiced.yaml")
	if err := os.WriteFile(file, []byte("log:\n  access: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, []string{"SLUICE_LOG_ACCESS=", "SLUICE_GC_INTERVAL=", "SLUICE_DATA="})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Log.Access || c.GC.Interval.Std() != time.Hour || c.Data == "" {
		t.Fatalf("empty variables changed the config: %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(body string) string {
		n++
		f := filepath.Join(dir, fmt.Sprintf("c%d.yaml", n))
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name, file string
		env        []string
		want       string
	}{
		{"missing file", filepath.Join(dir, "nope.yaml"), nil, "read config"},
		{"unknown key", write("lisen: x\n"), nil, "lisen"},
		{"bad duration", write("gc:\n  interval: soon\n"), nil, "soon"},
		{"bad env duration", "", []string{"SLUICE_GC_INTERVAL=soon"}, "SLUICE_GC_INTERVAL"},
		{"bad env bool", "", []string{"SLUICE_LOG_ACCESS=maybe"}, "SLUICE_LOG_ACCESS"},
		{"bad level", "", []string{"SLUICE_LOG_LEVEL=loud"}, "log.level"},
		{"bad driver", write("database:\n  driver: oracle\n"), nil, "database.driver"},
		{"redirect from a directory", "", []string{"SLUICE_STORAGE_REDIRECT=true"}, "storage.redirect needs object storage"},
		{"postgres without dsn", write("database:\n  driver: postgres\n"), nil, "needs database.dsn"},
		{"postgres url for sqlite", "", []string{"SLUICE_DATABASE_DSN=postgres://u@h/db"}, "set database.driver: postgres"},
		{"zero limit", write("streaming:\n  limits:\n    maxEntries: 0\n"), nil, "streaming.limits.maxEntries 0: must be positive"},
		{"negative env limit", "", []string{"SLUICE_STREAMING_LIMITS_MAX_TOC_BYTES=-1"}, "streaming.limits.maxTOCBytes -1"},
		{"TOC over a frame", "", []string{"SLUICE_STREAMING_LIMITS_MAX_TOC_BYTES=5000000000"}, "skippable frame"},
		{"unknown limit", write("streaming:\n  limits:\n    maxFiles: 10\n"), nil, "maxFiles"},
		{"small conversion memory", "", []string{"SLUICE_STREAMING_CONVERSION_MEMORY=1000"}, "streaming.conversionMemory 1000"},
		{"budget below one conversion", "", []string{"SLUICE_STREAMING_MEMORY_BUDGET=200000000"}, "streaming.memoryBudget 200000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.file, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := Load(write(""), nil); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	c, err := Load(write("database:\n  driver: postgres\n"), []string{"SLUICE_DATABASE_DSN=postgres://u:secret@h/db"})
	if err != nil || c.Database.DSN != "postgres://u:secret@h/db" {
		t.Fatalf("postgres with its DSN from the environment: %+v, %v", c.Database, err)
	}
	if err := c.ResolvePaths(); err != nil || c.Database.DSN != "postgres://u:secret@h/db" {
		t.Fatalf("ResolvePaths changed a PostgreSQL URL: %q, %v", c.Database.DSN, err)
	}
}

// TestStreamingLimits: every limit has its default, and a key set in the
// file or the environment reaches the converter's Limits.
func TestStreamingLimits(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Streaming.Limits.Streaming(); got != streaming.DefaultLimits {
		t.Fatalf("default limits %+v, want streaming.DefaultLimits %+v", got, streaming.DefaultLimits)
	}
	if c.Streaming.ConversionMemory != streaming.DefaultMemoryBudget || c.Streaming.MemoryBudget != 0 {
		t.Fatalf("default memory: conversion %d, budget %d", c.Streaming.ConversionMemory, c.Streaming.MemoryBudget)
	}
	f := filepath.Join(t.TempDir(), "c.yaml")
	body := "streaming:\n  memoryBudget: 1073741824\n  limits:\n    maxEntries: 1000\n    maxPathBytes: 1024\n    maxNameBytes: 100\n" +
		"    maxTOCBytes: 2000\n    maxTOCJSONBytes: 3000\n    maxUncompressedBytes: 4000\n    maxExpansionRatio: 50\n" +
		"    expansionGraceBytes: 5000\n    maxChunkBytes: 6000\n"
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Load(f, []string{"SLUICE_STREAMING_LIMITS_MAX_ENTRIES=7"})
	if err != nil {
		t.Fatal(err)
	}
	want := streaming.Limits{MaxEntries: 7, MaxPathBytes: 1024, MaxNameBytes: 100, MaxTOCSize: 2000, MaxTOCUncompressedSize: 3000,
		MaxUncompressedSize: 4000, MaxRatio: 50, RatioGrace: 5000, MaxChunkSize: 6000}
	if got := c.Streaming.ConverterOptions(); got.Limits != want || got.MemoryBudget != streaming.DefaultMemoryBudget || c.Streaming.MemoryBudget != 1<<30 {
		t.Fatalf("converter options %+v (budget %d), want limits %+v", got, c.Streaming.MemoryBudget, want)
	}
}

func TestUpperSnake(t *testing.T) {
	for in, want := range map[string]string{"gracePeriod": "GRACE_PERIOD", "uploadTTL": "UPLOAD_TTL", "url": "URL", "dsn": "DSN", "listen": "LISTEN"} {
		if got := upperSnake(in); got != want {
			t.Errorf("upperSnake(%q) = %q, want %q", in, got, want)
		}
	}
}

// The default ./data is taken from the working directory: its blob URL
// names that directory, never a host "data" with the path /blobs.
func TestResolvePathsRelativeData(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	c := Default()
	c.Database.DSN = "meta/sluice.db"
	if err := c.ResolvePaths(); err != nil {
		t.Fatal(err)
	}
	if c.Data != filepath.Join(wd, "data") || c.DatabaseFile() != filepath.Join(wd, "meta", "sluice.db") || c.KeyDir() != filepath.Join(wd, "data", "keys") {
		t.Fatalf("resolved paths %s %s %s", c.Data, c.DatabaseFile(), c.KeyDir())
	}
	u, err := url.Parse(c.BlobURL())
	if err != nil || u.Host != "" || u.Path != filepath.Join(wd, "data", "blobs") {
		t.Fatalf("blob URL %s: host %q path %q (%v)", c.BlobURL(), u.Host, u.Path, err)
	}
}

// A data directory whose name has URL syntax in it stays that directory.
func TestBlobURLEscapesData(t *testing.T) {
	c := Default()
	c.Data = "/srv/my data#1?%"
	u, err := url.Parse(c.BlobURL())
	if err != nil || u.Path != "/srv/my data#1?%/blobs" {
		t.Fatalf("blob URL %s: path %q (%v)", c.BlobURL(), u.Path, err)
	}
}
