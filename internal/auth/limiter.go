package auth

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// userBudgetFactor is how many times larger than one address's burst the
// failures of a user name across all addresses may be.
const userBudgetFactor = 10

// failLimiter limits failed logins by user name and source address, so
// that guessing from one client leaves alone the other user names behind
// the same address (loopback, a NAT, a CI runner):
//
//   - each (user name, address) pair gets burst failures, then one per
//     refill;
//   - each user name gets userBudgetFactor times that across all
//     addresses, refilled at the same pace. Once a guesser with many
//     addresses has spent it, an address that failed for the name within
//     the window waits for the budget to refill, while an address that did
//     not (the real user, elsewhere) is still let through: each further
//     guess costs the guesser a fresh address.
//
// Successful logins cost nothing. Entries are forgotten once they hold no
// debt, so memory follows the recent failures, not every name ever tried.
type failLimiter struct {
	burst  int
	refill time.Duration
	// window is how long an address that failed for a user name stays
	// held to that name's budget: as long as the budget takes to refill.
	window time.Duration

	mu    sync.Mutex
	pairs map[pairKey]*failures
	users map[string]*failures
	swept time.Time
}

type pairKey struct{ user, source string }

// failures is a token bucket of allowed failures and the time of the last.
type failures struct {
	lim  *rate.Limiter
	last time.Time
}

func newFailLimiter(burst int, refill time.Duration) *failLimiter {
	// A huge burst (tests turn the limit off with one) saturates the
	// window instead of overflowing it.
	window := time.Duration(math.MaxInt64)
	if n := int64(userBudgetFactor * burst); n < math.MaxInt64/int64(refill) {
		window = time.Duration(n) * refill
	}
	return &failLimiter{
		burst: burst, refill: refill, window: window,
		pairs: map[pairKey]*failures{}, users: map[string]*failures{},
	}
}

// wait is how long source must wait before it may try to log in as user;
// zero when it may now.
func (f *failLimiter) wait(now time.Time, source, user string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep(now)
	pair := f.pairs[pairKey{user, source}]
	if pair == nil {
		return 0
	}
	w := f.untilToken(pair, now)
	if u := f.users[user]; u != nil && now.Sub(pair.last) < f.window {
		w = max(w, f.untilToken(u, now))
	}
	return w
}

// failed records a failed login as user from source.
func (f *failLimiter) failed(now time.Time, source, user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pair := f.pairs[pairKey{user, source}]
	if pair == nil {
		pair = &failures{lim: rate.NewLimiter(rate.Every(f.refill), f.burst)}
		f.pairs[pairKey{user, source}] = pair
	}
	u := f.users[user]
	if u == nil {
		u = &failures{lim: rate.NewLimiter(rate.Every(f.refill), userBudgetFactor*f.burst)}
		f.users[user] = u
	}
	for _, b := range []*failures{pair, u} {
		b.lim.AllowN(now, 1)
		b.last = now
	}
}

// untilToken is how long until b allows one more failure.
func (f *failLimiter) untilToken(b *failures, now time.Time) time.Duration {
	missing := 1 - b.lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(missing * float64(f.refill)))
}

// sweep forgets, every refill interval, the entries that hold no debt: a
// user name whose budget is full again, and a pair whose own bucket is full
// and that no longer counts against its name's budget.
func (f *failLimiter) sweep(now time.Time) {
	if now.Sub(f.swept) < f.refill {
		return
	}
	f.swept = now
	full := func(b *failures) bool { return b.lim.TokensAt(now) >= float64(b.lim.Burst()) }
	for k, p := range f.pairs {
		if full(p) && (f.users[k.user] == nil || full(f.users[k.user]) || now.Sub(p.last) >= f.window) {
			delete(f.pairs, k)
		}
	}
	for k, u := range f.users {
		if full(u) {
			delete(f.users, k)
		}
	}
}

// TooManyAttemptsError refuses a login after too many failures; it is
// ErrTooManyAttempts, and says how long to wait.
type TooManyAttemptsError struct {
	// Wait is how long until the limiter lets the next attempt through.
	Wait time.Duration
}

func (e *TooManyAttemptsError) Error() string {
	return fmt.Sprintf("%v for this user name; retry in %d s", ErrTooManyAttempts, e.Seconds())
}

// Is makes the error match ErrTooManyAttempts.
func (e *TooManyAttemptsError) Is(target error) bool { return target == ErrTooManyAttempts }

// Seconds is the wait in whole seconds, rounded up: a Retry-After.
func (e *TooManyAttemptsError) Seconds() int {
	return max(1, int(math.Ceil(e.Wait.Seconds())))
}
