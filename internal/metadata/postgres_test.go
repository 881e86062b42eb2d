package metadata_test

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/metadata/storetest"
	"github.com/sluicehq/sluice/internal/testbackend"
)

func TestMain(m *testing.M) { testbackend.Main(m) }

func TestPostgres(t *testing.T) {
	storetest.Run(t, openPostgres)
}

func openPostgres(t *testing.T, now func() time.Time) storetest.Store {
	s, err := metadata.OpenPostgres(context.Background(), testbackend.Postgres(t), metadata.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A local file's error is no database outage, though its syscall.Errno
// has a Timeout method as network errors do.
func TestUnavailableIsTheNetworks(t *testing.T) {
	if err := (&fs.PathError{Op: "open", Path: "/srv/sluice.db", Err: syscall.ENOTDIR}); metadata.Unavailable(err) {
		t.Errorf("%v counted as the database being unavailable", err)
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	if !metadata.Unavailable(fmt.Errorf("connect: %w", refused)) {
		t.Errorf("%v not counted as the database being unavailable", refused)
	}
}
