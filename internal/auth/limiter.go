package auth

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// failLimiter limits failed logins per source address: a burst, then one
// per refill interval. Successful logins cost nothing.
type failLimiter struct {
	burst  int
	refill time.Duration

	mu      sync.Mutex
	sources map[string]*sourceLimit
	swept   time.Time
}

type sourceLimit struct {
	lim  *rate.Limiter
	seen time.Time
}

func newFailLimiter(burst int, refill time.Duration) *failLimiter {
	return &failLimiter{burst: burst, refill: refill, sources: map[string]*sourceLimit{}}
}

func (f *failLimiter) get(source string) *sourceLimit {
	now := time.Now()
	if now.Sub(f.swept) > time.Minute {
		for k, v := range f.sources {
			if now.Sub(v.seen) > 10*time.Minute {
				delete(f.sources, k)
			}
		}
		f.swept = now
	}
	l := f.sources[source]
	if l == nil {
		l = &sourceLimit{lim: rate.NewLimiter(rate.Every(f.refill), f.burst)}
		f.sources[source] = l
	}
	l.seen = now
	return l
}

// allowed reports whether source may try to log in now.
func (f *failLimiter) allowed(source string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.get(source).lim.Tokens() >= 1
}

// failed records a failed attempt from source.
func (f *failLimiter) failed(source string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(source).lim.Allow()
}
