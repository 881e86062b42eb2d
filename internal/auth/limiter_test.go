package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Failures of one user name from one address hold back that pair only:
// other names behind the address, and the same name from elsewhere, get
// through.
func TestFailLimiterByUserAndAddress(t *testing.T) {
	f := newFailLimiter(10, 6*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		if f.wait(now, "10.0.0.1", "admin") == 0 {
			f.failed(now, "10.0.0.1", "admin")
		}
	}
	now := t0.Add(time.Second)
	if w := f.wait(now, "10.0.0.1", "admin"); w <= 0 {
		t.Fatalf("the guesser may go on: wait %v", w)
	}
	if w := f.wait(now, "10.0.0.1", "ci-pull"); w != 0 {
		t.Errorf("another user name behind the same address waits %v", w)
	}
	if w := f.wait(now, "10.0.0.2", "admin"); w != 0 {
		t.Errorf("the same user name from another address waits %v", w)
	}
}

// The wait is the real refill: one failure's worth of time after the
// bucket emptied, and Retry-After rounds it up to whole seconds.
func TestFailLimiterWait(t *testing.T) {
	f := newFailLimiter(10, 6*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 10 {
		f.failed(t0, "10.0.0.1", "admin")
	}
	tests := []struct {
		after      time.Duration
		wait       time.Duration
		retryAfter int
	}{
		{0, 6 * time.Second, 6},
		{2500 * time.Millisecond, 3500 * time.Millisecond, 4},
		{5999 * time.Millisecond, time.Millisecond, 1},
		{6 * time.Second, 0, 0},
	}
	for _, tc := range tests {
		w := f.wait(t0.Add(tc.after), "10.0.0.1", "admin")
		// The bucket counts in floating point: allow it a microsecond.
		if (w - tc.wait).Abs() > time.Microsecond {
			t.Errorf("after %v: wait %v, want %v", tc.after, w, tc.wait)
		}
		if tc.retryAfter > 0 {
			err := error(&TooManyAttemptsError{Wait: w})
			if got := err.(*TooManyAttemptsError).Seconds(); got != tc.retryAfter || !errors.Is(err, ErrTooManyAttempts) {
				t.Errorf("after %v: Retry-After %d, want %d (%v)", tc.after, got, tc.retryAfter, err)
			}
			if want := fmt.Sprintf("retry in %d s", tc.retryAfter); !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not say %q", err, want)
			}
		}
	}
}

// Guessing one user name from many addresses spends the name's budget:
// then each address that failed waits for it, and only an address that has
// not failed is let through, so a guess costs a fresh address. The real
// user, from an address of their own, still logs in.
func TestFailLimiterManyAddresses(t *testing.T) {
	f := newFailLimiter(10, 6*time.Second)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Ten addresses spend their bursts: 100 failures, the name's budget.
	for a := range 10 {
		for range 10 {
			f.failed(now, fmt.Sprintf("10.0.1.%d", a), "admin")
		}
	}
	// An eleventh address fails once; its own bucket would allow nine
	// more, but the name's budget is spent.
	if w := f.wait(now, "10.0.2.1", "admin"); w != 0 {
		t.Fatalf("a fresh address waits %v", w)
	}
	f.failed(now, "10.0.2.1", "admin")
	later := now.Add(time.Second)
	if w := f.wait(later, "10.0.2.1", "admin"); w <= 0 {
		t.Fatalf("an address that failed guesses on while the budget is spent")
	}
	if w := f.wait(later, "192.0.2.7", "admin"); w != 0 {
		t.Fatalf("the real user from an address without failures waits %v", w)
	}
}

// Entries that hold no debt are forgotten, so names tried once do not pile
// up.
func TestFailLimiterForgets(t *testing.T) {
	f := newFailLimiter(10, 6*time.Second)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		f.failed(now, "10.0.0.1", fmt.Sprintf("user%d", i))
	}
	f.wait(now.Add(6*time.Second), "10.0.0.1", "user0")
	if len(f.pairs) != 0 || len(f.users) != 0 {
		t.Fatalf("%d pairs and %d names kept after their buckets refilled", len(f.pairs), len(f.users))
	}
}
