package conversion

import (
	"context"
	"encoding/json"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/streaming"
)

// List lists the operations f selects that visible lets the caller see,
// newest first, after the operation last, at most n (n < 0: all), and
// whether more follow. Operations the caller may not see do not count
// against n, so a page is full while visible ones remain; finding them may
// read the whole history for a caller who sees few.
func (s *Service) List(ctx context.Context, f metadata.OperationFilter, last string, n int,
	visible func(*metadata.Operation) bool) ([]*metadata.Operation, bool, error) {
	out := []*metadata.Operation{}
	for {
		batch, more, err := s.store.ListOperations(ctx, f, last, 500)
		if err != nil {
			return nil, false, err
		}
		for _, op := range batch {
			if !visible(op) {
				continue
			}
			if n >= 0 && len(out) == n {
				return out, true, nil
			}
			out = append(out, op)
		}
		if !more || len(batch) == 0 {
			return out, false, nil
		}
		last = batch[len(batch)-1].ID
	}
}

// Retry starts op, a Failed or Canceled operation, again: a new operation
// for the same image and request, started by startedBy, returned as Start
// and StartImport return theirs (an image converted meanwhile succeeds at
// once; an import with NoForce is refused if a target tag exists now).
// creds are the source registry's credentials for an import that needs
// them: those of the first try were kept in memory only, until it ended.
// An operation still queued or running, or one that succeeded, is refused
// with CodeOperationNotRetryable.
func (s *Service) Retry(ctx context.Context, op *metadata.Operation, startedBy string, creds *ImportCredentials) (*metadata.Operation, error) {
	switch op.Status {
	case metadata.StatusFailed, metadata.StatusCanceled:
	case metadata.StatusSucceeded:
		return nil, errorf(CodeOperationNotRetryable, "operation %s succeeded; only a Failed or Canceled operation can be retried", op.ID)
	default:
		return nil, errorf(CodeOperationNotRetryable, "operation %s is %s; only a Failed or Canceled operation can be retried: "+
			"wait for it to end, or cancel it first", op.ID, op.Status)
	}
	switch op.Kind {
	case KindConversion:
		return s.Start(ctx, op.Repository, digest.Digest(op.Digest), startedBy)
	case KindImport:
		var st storedImport
		if err := json.Unmarshal([]byte(op.Request), &st); err != nil || len(st.Targets) == 0 {
			return nil, errorf(CodeOperationNotRetryable, "import %s has no stored request to retry; start a new import", op.ID)
		}
		return s.enqueueImport(ctx, &st, creds, startedBy)
	}
	return nil, errorf(CodeOperationNotRetryable, "operation %s is a %s, which cannot be retried", op.ID, op.Kind)
}

// Streaming states of an image, as the portal shows them.
const (
	StateReady      = "ready"      // it has a streaming artifact
	StateConverting = "converting" // a conversion is queued or running
	StateFailed     = "failed"     // its latest conversion failed
	StateNone       = "none"
)

// States tells, for each of digests in repo, whether the image has a
// streaming artifact, is being converted, failed to convert, or none of
// these. A conversion under way wins over an artifact it is replacing.
func (s *Service) States(ctx context.Context, repo string, digests []string) (map[string]string, error) {
	raw, err := s.store.ArtifactStates(ctx, repo, streaming.ArtifactType, KindConversion, digests)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(digests))
	for _, d := range digests {
		st := raw[d]
		switch {
		case st.Operation == metadata.StatusNotStarted || st.Operation == metadata.StatusRunning:
			out[d] = StateConverting
		case st.Artifacts > 0:
			out[d] = StateReady
		case st.Operation == metadata.StatusFailed:
			out[d] = StateFailed
		default:
			out[d] = StateNone
		}
	}
	return out, nil
}
