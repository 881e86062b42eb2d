// Package conversion runs artifact streaming conversions, and imports, as
// durable operations: rows in the metadata store that workers claim with a
// lease, report progress on, honour cancels of, and resume after a crash.
//
// A conversion reads an image through the registry service, converts its
// layers with the streaming package, and pushes the converted layers and the
// streaming manifest back through the registry like any client push, so that
// every blob is verified and the referrers index is kept. An operation never
// ends Succeeded before its referrer manifests are stored.
package conversion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/registry"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Operation kinds.
const (
	KindConversion = "ArtifactStreamingConversion"
	KindImport     = "Import"
)

// Options tune the workers.
type Options struct {
	// Workers is the number of operations run at once by this process.
	Workers int
	// Lease is how long a claimed operation stays with its worker without
	// a heartbeat; a crashed worker's operations resume after it.
	Lease time.Duration
	// Heartbeat is how often a worker renews its lease, reports progress
	// and checks for a cancel made through another process.
	Heartbeat time.Duration
	// Poll is how often idle workers look for operations enqueued by other
	// processes.
	Poll time.Duration
	// MaxAttempts bounds the tries of an operation that fails transiently.
	MaxAttempts int
	// Streaming tunes the converter; its MemoryBudget (default
	// streaming.DefaultMemoryBudget) is what each conversion reserves.
	Streaming streaming.Options
	// MemoryBudget bounds the heap of all the conversions this process
	// runs at once (default Workers × Streaming.MemoryBudget): a worker
	// waits for its conversion's share before converting a layer, so that
	// Workers × the per-conversion budget cannot exceed it.
	MemoryBudget int64
	// Signer signs every streaming artifact the service makes (required).
	Signer Signer
	// Metrics, if set, takes the workers' metrics: operations ended and
	// their durations, lease losses, and the shared queue's depth.
	Metrics prometheus.Registerer
}

// DefaultOptions suit a small machine: one worker.
func DefaultOptions() Options {
	return Options{Workers: 1, Lease: 30 * time.Second, Heartbeat: time.Second, Poll: 2 * time.Second, MaxAttempts: 3}
}

// Service starts, shows, cancels and runs operations.
type Service struct {
	reg    *registry.Registry
	store  Store
	opts   Options
	signer Signer
	log    *slog.Logger
	owner  string
	wake   chan struct{}

	metrics *metrics

	mu      sync.Mutex
	running map[string]context.CancelFunc

	// memory holds the heap budget of the conversions running at once.
	memory *semaphore.Weighted

	// sourceHook, in tests, wraps the reader of each source layer (to slow
	// a conversion down enough to cancel it midway).
	sourceHook func(io.Reader) io.Reader
}

// New returns the service over the registry and the store of its
// operations (the one the registry writes to), and installs its hooks in
// the registry, so that pushes to streaming repositories enqueue
// conversions. opts.Signer is required: a streaming artifact nobody signed
// is one no node mounts.
func New(reg *registry.Registry, store Store, opts Options, log *slog.Logger) *Service {
	if opts.Signer == nil {
		panic("conversion.New: Options.Signer is required")
	}
	if log == nil {
		log = slog.Default()
	}
	d := DefaultOptions()
	if opts.Workers <= 0 {
		opts.Workers = d.Workers
	}
	if opts.Lease <= 0 {
		opts.Lease = d.Lease
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = d.Heartbeat
	}
	if opts.Poll <= 0 {
		opts.Poll = d.Poll
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = d.MaxAttempts
	}
	if opts.Streaming.MemoryBudget <= 0 {
		opts.Streaming.MemoryBudget = streaming.DefaultMemoryBudget
	}
	if opts.MemoryBudget <= 0 {
		opts.MemoryBudget = int64(opts.Workers) * opts.Streaming.MemoryBudget
	}
	// A budget below one conversion's would stop every conversion.
	opts.Streaming.MemoryBudget = min(opts.Streaming.MemoryBudget, opts.MemoryBudget)
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &Service{
		reg:     reg,
		store:   store,
		opts:    opts,
		signer:  opts.Signer,
		log:     log,
		owner:   fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:])),
		wake:    make(chan struct{}, 1),
		running: make(map[string]context.CancelFunc),
		memory:  semaphore.NewWeighted(opts.MemoryBudget),
		metrics: newMetrics(opts.Metrics, store, log),
	}
	reg.SetStreamingHooks(s)
	return s
}

// OperationFor implements registry.StreamingHooks: runnable images and
// indexes pushed to a streaming repository are converted; artifacts,
// referrers (signatures, streaming artifacts) and anything else are not.
func (s *Service) OperationFor(repo string, dgst digest.Digest, m *oci.Manifest) *metadata.Operation {
	if !convertible(m) {
		return nil
	}
	op := newConversion(repo, dgst, metadata.StatusNotStarted, "Conversion queued for resource "+repo+"@"+dgst.String())
	op.StartedBy = metadata.AutoStreaming
	return op
}

// convertible reports whether an auto-streaming repository converts m.
func convertible(m *oci.Manifest) bool {
	if m.Subject != nil {
		return false
	}
	if oci.IsIndexMediaType(m.MediaType) {
		return m.ArtifactType == ""
	}
	return m.Config != nil && m.ArtifactType == m.Config.MediaType &&
		(m.Config.MediaType == oci.MediaTypeImageConfig || m.Config.MediaType == oci.MediaTypeDockerImageConfig)
}

func newConversion(repo string, dgst digest.Digest, status, details string) *metadata.Operation {
	return &metadata.Operation{ID: uuid.NewString(), Kind: KindConversion, Repository: repo, Digest: dgst.String(), Status: status, Details: details}
}

// Enqueued implements registry.StreamingHooks by waking an idle worker.
func (s *Service) Enqueued() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Deleted implements registry.StreamingHooks: conversions of deleted images
// are canceled.
func (s *Service) Deleted(ctx context.Context, repo string, digests []string) {
	ids, err := s.store.CancelOperationsFor(ctx, KindConversion, repo, digests)
	if err != nil {
		s.log.Warn("cancel conversions of deleted images", "repository", repo, "err", err)
		return
	}
	// Those running here stop now; elsewhere, at their next heartbeat.
	for _, id := range ids {
		s.stopLocal(id)
	}
}

// Start starts a conversion of the image repo@dgst for startedBy, or
// returns the one already queued or running. An image that already has a streaming artifact
// signed by the registry is not converted again: its operation is recorded
// as succeeded at once. One with only unsigned artifacts (pushed by hand,
// or made before artifacts were signed) is converted: conversion is
// deterministic, so it adds the signature to the artifact it would make.
func (s *Service) Start(ctx context.Context, repo string, dgst digest.Digest, startedBy string) (*metadata.Operation, error) {
	m, err := s.reg.GetManifest(ctx, repo, oci.Reference{Digest: dgst.String()}, false)
	if errors.Is(err, registry.ErrManifestUnknown) {
		return nil, errorf(CodeResourceNotFound, "image %s@%s not found", repo, dgst)
	}
	if err != nil {
		return nil, err
	}
	return s.start(ctx, repo, m, startedBy)
}

// start is Start for the manifest m, read already.
func (s *Service) start(ctx context.Context, repo string, m *registry.Manifest, startedBy string) (*metadata.Operation, error) {
	dgst := m.Digest
	if m.ArtifactType == streaming.ArtifactType {
		return nil, errorf(CodeUnsupportedArtifact, messageUnsupportedArtifact)
	}
	if !oci.IsManifestMediaType(m.MediaType) {
		return nil, errorf(CodeUnsupportedMediaType, "%s is %s. %s", dgst, m.MediaType, messageUnsupportedMedia)
	}
	if op, err := s.store.ActiveOperation(ctx, KindConversion, repo, dgst.String()); err == nil {
		return op, nil
	}
	existing, err := s.SignedReferrers(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	op := newConversion(repo, dgst, metadata.StatusNotStarted, "Conversion queued for resource "+repo+"@"+dgst.String())
	op.StartedBy = startedBy
	if len(existing) > 0 {
		op.Status = metadata.StatusSucceeded
		op.Details = fmt.Sprintf("%s@%s already has a streaming artifact (%s); not converted again", repo, dgst, existing[0].Digest)
		op.Result = resultJSON(existing)
	}
	got, err := s.store.CreateOperation(ctx, op)
	if err != nil && !errors.Is(err, metadata.ErrOperationActive) {
		return nil, err
	}
	s.Enqueued()
	return got, nil
}

// Get reads an operation of a repository.
func (s *Service) Get(ctx context.Context, repo, id string) (*metadata.Operation, error) {
	op, err := s.store.GetOperation(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && repo != "" && op.Repository != repo) {
		return nil, errorf(CodeOperationUnknown, "operation %s not found in repository %s", id, repo)
	}
	return op, err
}

// Active returns the queued or running conversion of an image.
func (s *Service) Active(ctx context.Context, repo string, dgst digest.Digest) (*metadata.Operation, error) {
	op, err := s.store.ActiveOperation(ctx, KindConversion, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, errorf(CodeOperationUnknown, "no conversion running for %s@%s", repo, dgst)
	}
	return op, err
}

// Latest returns the most recent conversion of an image, finished or not.
func (s *Service) Latest(ctx context.Context, repo string, dgst digest.Digest) (*metadata.Operation, error) {
	op, err := s.store.LatestOperation(ctx, KindConversion, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, errorf(CodeOperationUnknown, "%s@%s has never been converted", repo, dgst)
	}
	return op, err
}

// Cancel cancels op, an operation the caller read with Get. A running one
// stops promptly: at once in this process, at its next heartbeat in
// another; its worker then removes what it had written.
func (s *Service) Cancel(ctx context.Context, op *metadata.Operation) (*metadata.Operation, error) {
	canceled, err := s.store.CancelOperation(ctx, op.ID)
	if err != nil {
		return nil, err
	}
	s.stopLocal(op.ID)
	return canceled, nil
}

func (s *Service) stopLocal(id string) {
	s.mu.Lock()
	cancel := s.running[id]
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Skipped is a tagged manifest StartExisting did not convert, and why.
type Skipped struct {
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
	Reason string `json:"reason"`
}

// StartExisting starts the conversion of every image a tag of repo points
// at, once per image, as Start does (an image already streaming succeeds at
// once); what cannot be converted (an artifact, a streaming artifact, a
// Windows image) is skipped, with why. The conversions are started by
// startedBy.
func (s *Service) StartExisting(ctx context.Context, repo, startedBy string) ([]*metadata.Operation, []Skipped, error) {
	var ops []*metadata.Operation
	var skipped []Skipped
	seen := map[digest.Digest]bool{}
	for last := ""; ; {
		tags, more, err := s.reg.Tags(ctx, repo, last, 1000)
		if err != nil {
			return nil, nil, err
		}
		for _, tag := range tags {
			m, err := s.reg.GetManifest(ctx, repo, oci.Reference{Tag: tag}, true)
			if errors.Is(err, registry.ErrManifestUnknown) {
				continue // untagged meanwhile
			}
			if err != nil {
				return nil, nil, err
			}
			if seen[m.Digest] {
				continue
			}
			seen[m.Digest] = true
			if parsed, err := oci.ParseManifest(m.MediaType, m.Payload); err != nil || !convertible(parsed) {
				skipped = append(skipped, Skipped{Tag: tag, Digest: m.Digest.String(), Reason: "not a runnable image (an artifact or a referrer)"})
				continue
			}
			op, err := s.start(ctx, repo, m, startedBy)
			if e, ok := codeOf(err); ok {
				skipped = append(skipped, Skipped{Tag: tag, Digest: m.Digest.String(), Reason: e.Code + ": " + e.Message})
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			ops = append(ops, op)
		}
		if !more || len(tags) == 0 {
			return ops, skipped, nil
		}
		last = tags[len(tags)-1]
	}
}
