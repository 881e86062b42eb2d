package snapshotter

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sluicehq/sluice/internal/client"
)

func TestFallbackReasonsInMetrics(t *testing.T) {
	m := NewMetrics()
	if n := testutil.CollectAndCount(m.fallbacks); n != len(FallbackReasons) {
		t.Errorf("the fallback metric has %d series before any fallback, want one per reason (%d)", n, len(FallbackReasons))
	}
	for _, r := range FallbackReasons {
		if v := testutil.ToFloat64(m.fallbacks.WithLabelValues(r)); v != 0 {
			t.Errorf("reason %s starts at %v", r, v)
		}
	}
}

func TestRegistryReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("manifest: %w", &client.Error{Status: http.StatusUnauthorized}), ReasonUnauthorized},
		{fmt.Errorf("manifest: %w", &client.Error{Status: http.StatusForbidden}), ReasonUnauthorized},
		{fmt.Errorf("token: %w", &errcode.ErrorResponse{StatusCode: http.StatusUnauthorized}), ReasonUnauthorized},
		{&client.Error{Status: http.StatusNotFound}, ReasonRegistry},
		{&errcode.ErrorResponse{StatusCode: http.StatusBadGateway}, ReasonRegistry},
		{errors.New("connection refused"), ReasonRegistry},
	} {
		if got := registryReason(tc.err); got != tc.want {
			t.Errorf("%v: reason %s, want %s", tc.err, got, tc.want)
		}
	}
}
