package metadata_test

import (
	"context"
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
