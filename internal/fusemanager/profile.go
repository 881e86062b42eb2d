package fusemanager

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// Startup profiles. A container starting reads a small part of its image,
// mostly the same part each time, one read after another: each read that
// misses waits for its own round trip. The first node to start a layer
// records which chunks the container read, in the order it first read
// them, and gives that list to the registry (PUT /acr/v1/{repo}/_profiles/
// {layer}); a node mounting the layer later gets the list with the mount
// and fetches those chunks at once, a few requests in parallel, while
// containerd is still creating the container. Reads then find them cached.
//
// This file is the exchange with the registry: asking for a layer's
// profile, and giving it the recording of a start when the registry's
// profile missed too much of it. record.go records a start; prefetch.go
// fetches a profile's chunks.
//
// Nothing is trusted from a profile but offsets: ranges outside the layer
// or beyond a profile's limits are dropped before anything is fetched,
// every chunk is verified against the TOC as any other, and a profile that
// names no chunk of the layer is ignored.

const (
	// profileTimeout bounds asking for and giving a profile.
	profileTimeout = 10 * time.Second
	// profileRecordedShare: a profile that missed more than this share of
	// a start's bytes is replaced by that start's recording.
	profileRecordedShare = 0.25
)

// profileAnswer is the registry's answer to a profile request: ranges of
// the blob (nil for none), or the error that kept it from answering.
type profileAnswer struct {
	ranges   []streaming.Range
	inferred bool
	err      error
}

// profile is a mount's profile work: the registry's profile of the layer
// and the recording of this start.
type profile struct {
	// known is the registry's profile as chunk indices; ready is closed
	// once it (or knownErr) is set.
	known    []int
	inferred bool // known is the converter's guess, not a start's recording
	knownErr error
	ready    chan struct{}

	recorder
}

func newProfile() *profile {
	return &profile{ready: make(chan struct{}), recorder: recorder{seen: map[int]struct{}{}}}
}

// fetchProfile asks the registry for a layer's profile, in the
// background.
func (m *Manager) fetchProfile(ref LayerRef) <-chan profileAnswer {
	out := make(chan profileAnswer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), profileTimeout)
		defer cancel()
		p, err := m.client(ref).StartupProfileOf(ctx, ref.Repository, ref.Digest)
		out <- profileAnswer{p.Ranges, p.Inferred, err}
	}()
	return out
}

// startProfile prefetches the registry's profile of a layer as soon as it
// arrives (starting before the TOC is loaded), and records this start
// until the container is past it, then gives the recording to the
// registry when it has no profile of the layer or a poor one.
func (m *Manager) startProfile(lm *mounted, known <-chan profileAnswer) {
	p := lm.profile
	lm.goWork(func() {
		var ans profileAnswer
		select {
		case ans = <-known:
		case <-lm.ctx.Done():
			ans.err = lm.ctx.Err()
		}
		if ans.err != nil {
			p.knownErr = ans.err
			close(p.ready)
			if errors.Is(ans.err, client.ErrNoProfiles) {
				m.log.Debug("the registry keeps no startup profiles", "registry", lm.ref.Registry)
			} else if lm.ctx.Err() == nil {
				m.metrics.profiles.WithLabelValues("failed").Inc()
				m.log.Warn("could not read the layer's startup profile; the layer is read on demand only", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", ans.err)
			}
			return
		}
		pf := newPrefetcher(m, lm)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Ranges are fetched before the TOC can say which are
			// chunks: a registry that did not check them must not make
			// the node allocate what they say.
			pf.run(streaming.FitProfile(ans.ranges, lm.ref.Size))
		}()
		select {
		case <-lm.opened:
			p.known, p.inferred = m.profileChunks(lm, ans.ranges), ans.inferred
		case <-lm.ctx.Done():
			p.knownErr = lm.ctx.Err()
		}
		close(p.ready)
		pf.opened()
		<-done
	})
	lm.goWork(func() {
		rec, ok := m.record(lm)
		if ok {
			m.giveProfile(lm, rec)
		}
	})
}

// profileChunks maps a profile's ranges to the layer's chunks, keeping
// their order and dropping ranges that are not exactly a chunk.
func (m *Manager) profileChunks(lm *mounted, ranges []streaming.Range) []int {
	idx := make([]int, 0, len(ranges))
	dropped := 0
	for _, r := range ranges {
		if i, ok := lm.reader.ChunkAt(r.Offset, r.Length); ok {
			idx = append(idx, i)
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		m.log.Warn("the layer's startup profile names ranges that are not chunks of it; they are ignored",
			"layer", lm.ref.SourceDigest, "ignored", dropped, "of", len(ranges))
	}
	return idx
}

// giveProfile gives the registry the recording of this start unless its
// profile of the layer already covered the start well.
func (m *Manager) giveProfile(lm *mounted, rec []int) {
	p := lm.profile
	select {
	case <-p.ready:
	case <-lm.ctx.Done():
		return
	}
	if p.knownErr != nil {
		return // the registry does not keep profiles, or could not say
	}
	if lm.bad.Load() {
		return // what a bad layer's start read is nothing to prefetch
	}
	chunks := lm.reader.TOC().Chunks
	// The registry's profile is judged against the recording cut to what
	// a profile may hold: judged against all of a start that read more,
	// it would be replaced by an equal one on every start.
	ranges := make([]streaming.Range, len(rec))
	for k, i := range rec {
		ranges[k] = streaming.Range{Offset: chunks[i].Offset, Length: chunks[i].Size}
	}
	// Chunks lie inside the layer: fitting only cuts the tail.
	ranges = streaming.FitProfile(ranges, lm.ref.Size)
	// A recording replaces what the converter inferred whatever it
	// covered: it is what a start read.
	if len(ranges) == 0 || (!p.inferred && !replaces(rec[:len(ranges)], p.known, chunks)) {
		return
	}
	ctx, cancel := context.WithTimeout(lm.ctx, profileTimeout)
	defer cancel()
	if err := m.client(lm.ref).PutStartupProfile(ctx, lm.ref.Repository, lm.ref.Digest, ranges); err != nil {
		if lm.ctx.Err() == nil {
			m.metrics.profiles.WithLabelValues("failed").Inc()
			m.log.Warn("could not give the registry the layer's startup profile", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "err", err)
		}
		return
	}
	var total int64
	for _, r := range ranges {
		total += r.Length
	}
	m.metrics.profiles.WithLabelValues("recorded").Inc()
	m.log.Info("startup profile recorded", "image", lm.ref.ImageRef, "layer", lm.ref.SourceDigest, "chunks", len(ranges), "bytes", total)
}

// replaces says whether the recording rec of a start should replace the
// registry's profile known: when there is none, or when the start read
// more than profileRecordedShare of its bytes outside it.
func replaces(rec, known []int, chunks []streaming.Chunk) bool {
	if len(known) == 0 {
		return true
	}
	inKnown := make(map[int]bool, len(known))
	for _, i := range known {
		inKnown[i] = true
	}
	var missed, total int64
	for _, i := range rec {
		total += chunks[i].Size
		if !inKnown[i] {
			missed += chunks[i].Size
		}
	}
	return float64(missed) > profileRecordedShare*float64(total)
}
