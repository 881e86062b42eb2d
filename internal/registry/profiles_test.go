package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/streaming"
)

// TestStartupProfileGoesWithItsBlob stores a profile and finds it gone
// once garbage collection deleted the blob, and not back when the same
// content is pushed again.
func TestStartupProfileGoesWithItsBlob(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const size = 2*streaming.MinProfileCap + 1000 // above the floor, half the blob is the bound
	layer := put(t, e.reg, "app", make([]byte, size))
	if err := e.reg.PutStartupProfile(ctx, "app", layer, []streaming.Range{{Offset: 100, Length: 200}}); err != nil {
		t.Fatal(err)
	}
	p, err := e.reg.StartupProfile(ctx, "app", layer)
	if err != nil || len(p.Ranges) != 1 || p.Ranges[0] != (streaming.Range{Offset: 100, Length: 200}) || !p.Updated.Equal(e.clock.Now()) {
		t.Fatalf("stored profile %+v, %v", p, err)
	}
	if err := e.reg.PutStartupProfile(ctx, "app", layer, []streaming.Range{{Offset: 0, Length: size/2 + 1}}); !errors.Is(err, ErrProfileInvalid) {
		t.Fatalf("a profile of more than half the blob: %v", err)
	}

	e.clock.Advance(48 * time.Hour)
	if err := e.reg.DeleteBlob(ctx, "app", layer); err != nil {
		t.Fatal(err)
	}
	if st, err := e.reg.CollectGarbage(ctx); err != nil || st.DeletedBlobs != 1 {
		t.Fatalf("collection %+v, %v", st, err)
	}
	put(t, e.reg, "app", make([]byte, size))
	if _, err := e.reg.StartupProfile(ctx, "app", layer); !errors.Is(err, ErrProfileUnknown) {
		t.Fatalf("the profile outlived its blob: %v", err)
	}
}

// TestStartupProfilesArePerRepository: two repositories hold the same
// layer; a profile given through one is not the other's, and replacing or
// deleting it in one leaves the other's alone. Unlinking the layer from a
// repository takes its profile with it, even while another repository
// keeps the blob.
func TestStartupProfilesArePerRepository(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	layer := put(t, e.reg, "app", make([]byte, 1000))
	put(t, e.reg, "other", make([]byte, 1000))
	mine := []streaming.Range{{Offset: 100, Length: 200}}
	if err := e.reg.PutStartupProfile(ctx, "app", layer, mine); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.StartupProfile(ctx, "other", layer); !errors.Is(err, ErrProfileUnknown) {
		t.Fatalf("other has app's profile: %v", err)
	}
	if err := e.reg.PutStartupProfile(ctx, "other", layer, []streaming.Range{{Offset: 0, Length: 50}}); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.DeleteStartupProfile(ctx, "other", layer); err != nil {
		t.Fatal(err)
	}
	p, err := e.reg.StartupProfile(ctx, "app", layer)
	if err != nil || len(p.Ranges) != 1 || p.Ranges[0] != mine[0] {
		t.Fatalf("app's profile after other's was given and deleted: %+v, %v", p, err)
	}

	if err := e.reg.DeleteBlob(ctx, "app", layer); err != nil {
		t.Fatal(err)
	}
	put(t, e.reg, "app", make([]byte, 1000))
	if _, err := e.reg.StartupProfile(ctx, "app", layer); !errors.Is(err, ErrProfileUnknown) {
		t.Fatalf("app's profile outlived the layer's link to app: %v", err)
	}
}
