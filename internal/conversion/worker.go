package conversion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/registry"
)

// Run runs the workers until ctx ends. Operations still running then are
// given back to the queue so that the next process resumes them at once.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range s.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.workLoop(ctx)
		}()
	}
	wg.Wait()
}

func (s *Service) workLoop(ctx context.Context) {
	for ctx.Err() == nil {
		op, err := s.claim(ctx)
		if err != nil {
			if !errors.Is(err, metadata.ErrNotFound) && ctx.Err() == nil {
				s.log.Error("claim operation", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			case <-time.After(s.opts.Poll):
			}
			continue
		}
		s.runOperation(ctx, op)
	}
}

// claim takes the next operation, imports first: they are what a user
// waits on interactively.
func (s *Service) claim(ctx context.Context) (*metadata.Operation, error) {
	op, err := s.store.ClaimOperation(ctx, KindImport, s.owner, s.opts.Lease)
	if errors.Is(err, metadata.ErrNotFound) {
		op, err = s.store.ClaimOperation(ctx, KindConversion, s.owner, s.opts.Lease)
	}
	return op, err
}

// progress is what a running operation reports at each heartbeat.
type progress struct {
	done, total atomic.Int64
}

// runOperation runs one claimed operation to its end, keeping its lease
// alive and watching for a cancel.
func (s *Service) runOperation(parent context.Context, op *metadata.Operation) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	s.mu.Lock()
	s.running[op.ID] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, op.ID)
		s.mu.Unlock()
	}()
	log := s.log.With("operation", op.ID, "kind", op.Kind, "resource", op.Repository+"@"+op.Digest, "attempt", op.Attempts)
	log.Info("operation started")
	start := time.Now()

	p := &progress{}
	details := "Conversion ongoing for resource " + op.Repository + "@" + op.Digest
	if op.Kind == KindImport {
		details = "Importing " + op.Digest + " into " + op.Repository
	}
	var canceled atomic.Bool
	stopBeat := s.heartbeat(ctx, op, p, details, func() { canceled.Store(true); cancel() })

	var result string
	var err error
	switch op.Kind {
	case KindConversion:
		result, err = s.convert(ctx, op, p)
	case KindImport:
		result, err = s.runImport(ctx, op, p)
	default:
		err = errorf(CodeUnknown, "unknown operation kind %q", op.Kind)
	}
	stopBeat()

	final := context.WithoutCancel(parent)
	switch {
	case canceled.Load() || (err != nil && ctx.Err() != nil && parent.Err() == nil):
		s.metrics.observe(op.Kind, metadata.StatusCanceled, time.Since(start))
		log.Info("operation canceled; what it wrote was removed", "duration", time.Since(start))
	case errors.Is(err, errImageDeleted):
		s.finish(final, op, metadata.Operation{Status: metadata.StatusCanceled, Details: metadata.DetailsImageDeleted}, log)
		s.metrics.observe(op.Kind, metadata.StatusCanceled, time.Since(start))
		log.Info("operation canceled: its image was deleted", "duration", time.Since(start))
	case parent.Err() != nil:
		s.metrics.observe(op.Kind, "Retried", time.Since(start))
		// Shutting down: hand the operation back so the next process
		// resumes it without waiting for the lease to run out.
		if rerr := s.store.RetryOperation(final, op.ID, s.owner, 0, "Interrupted by a shutdown; will resume"); rerr != nil {
			log.Warn("hand back operation", "err", rerr)
		}
	case err == nil:
		done := "Conversion completed for resource " + op.Repository + "@" + op.Digest
		if op.Kind == KindImport {
			done = "Imported " + op.Digest + " into " + op.Repository
		}
		// The total goes with the result: an operation quicker than a
		// heartbeat never reported it.
		s.finish(final, op, metadata.Operation{Status: metadata.StatusSucceeded, Result: result, Details: done, TotalBytes: p.total.Load()}, log)
		s.metrics.observe(op.Kind, metadata.StatusSucceeded, time.Since(start))
		log.Info("operation succeeded", "duration", time.Since(start), "bytes", p.total.Load())
	default:
		outcome := s.fail(final, op, err, log)
		s.metrics.observe(op.Kind, outcome, time.Since(start))
	}
}

// heartbeat renews the lease and reports progress until the returned stop
// is called; onCancel runs when the stored status says the operation was
// canceled or taken over.
func (s *Service) heartbeat(ctx context.Context, op *metadata.Operation, p *progress, details string, onCancel func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.opts.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			status, err := s.store.Heartbeat(ctx, op.ID, s.owner, s.opts.Lease, p.done.Load(), p.total.Load(), details)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("operation heartbeat", "operation", op.ID, "err", err)
				}
				continue
			}
			if status != metadata.StatusRunning {
				if status == "LeaseLost" {
					s.metrics.leaseLoss.Inc()
				}
				onCancel()
				return
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func (s *Service) finish(ctx context.Context, op *metadata.Operation, final metadata.Operation, log *slog.Logger) {
	ok, err := s.store.FinishOperation(ctx, op.ID, s.owner, final)
	if err != nil {
		log.Warn("record operation end", "err", err)
	} else if !ok {
		log.Warn("operation ended elsewhere (canceled or taken over); its result is not recorded")
	}
}

// fail records a failure: a coded error at once, anything else after the
// last attempt, earlier ones go back to the queue with a growing delay. It
// returns the outcome: Failed, or Retried.
func (s *Service) fail(ctx context.Context, op *metadata.Operation, err error, log *slog.Logger) string {
	if e, ok := codeOf(err); ok {
		log.Warn("operation failed", "code", e.Code, "err", e.Message)
		s.finish(ctx, op, metadata.Operation{Status: metadata.StatusFailed, ErrorCode: e.Code, ErrorMessage: e.Message,
			Details: failedDetails(op)}, log)
		return metadata.StatusFailed
	}
	store, noSpace := registry.NoSpace(err)
	if noSpace != nil {
		// The operator's to act on: the error names the file that could
		// not be written.
		log.Error("operation failed: a store is out of space", "store", store, "err", err)
	}
	if op.Attempts < s.opts.MaxAttempts {
		delay := time.Duration(op.Attempts) * 5 * time.Second
		if noSpace == nil {
			log.Warn("operation failed; will retry", "err", err, "retry_in", delay)
		}
		if rerr := s.store.RetryOperation(ctx, op.ID, s.owner, delay, "Retrying after an error: "+operationMessage(err)); rerr != nil {
			log.Warn("requeue operation", "err", rerr)
		}
		return "Retried"
	}
	if noSpace == nil {
		log.Error("operation failed", "err", err)
	}
	s.finish(ctx, op, metadata.Operation{Status: metadata.StatusFailed, ErrorCode: CodeUnknown, ErrorMessage: operationMessage(err),
		Details: failedDetails(op)}, log)
	return metadata.StatusFailed
}

// operationMessage is what an operation's record says of err, which its
// readers see through the API: a store out of space is told with the
// system's cause ("no space left on device") but not the server's file
// the error names, which the log has.
func operationMessage(err error) string {
	store, cause := registry.NoSpace(err)
	switch {
	case cause == nil:
		return err.Error()
	case store == registry.StoreMetadata:
		return fmt.Sprintf("the registry's metadata database is full (%v)", cause)
	}
	return fmt.Sprintf("storing the result failed: the registry's blob storage is full (%v)", cause)
}

func failedDetails(op *metadata.Operation) string {
	if op.Kind == KindImport {
		return "Import of " + op.Digest + " into " + op.Repository + " failed"
	}
	return "Conversion failed for resource " + op.Repository + "@" + op.Digest
}
