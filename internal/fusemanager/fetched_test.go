package fusemanager

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/internal/streaming"
)

// failingRanges answers every request with an error.
type failingRanges struct{}

func (failingRanges) ReadRange(context.Context, []byte, int64) error {
	return errors.New("registry unreachable")
}

func (failingRanges) ReadRanges(context.Context, []streaming.Range, [][]byte) error {
	return errors.New("registry unreachable")
}

// A mount counts the bytes its layer fetched, whatever fetched them, and
// the manager's socket answers the count per mountpoint.
func TestFetchedPerMount(t *testing.T) {
	m, err := New(Config{Root: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.cache.Close)
	blob := make([]byte, 1<<16)
	a, b := &mounted{mountpoint: "/mnt/a"}, &mounted{mountpoint: "/mnt/b"}
	ra := &countingRanges{inner: &gatedRanges{blob: blob}, metrics: m.metrics, layer: &a.fetched}
	rb := &countingRanges{inner: &gatedRanges{blob: blob}, metrics: m.metrics, layer: &b.fetched}
	ctx := context.Background()
	if err := ra.ReadRange(ctx, make([]byte, 100), 0); err != nil {
		t.Fatal(err)
	}
	if err := ra.ReadRanges(withKind(ctx, background), []streaming.Range{{Offset: 0, Length: 1000}, {Offset: 2000, Length: 24}},
		[][]byte{make([]byte, 1000), make([]byte, 24)}); err != nil {
		t.Fatal(err)
	}
	if err := rb.ReadRange(withKind(ctx, prefetch), make([]byte, 7), 0); err != nil {
		t.Fatal(err)
	}
	failed := &countingRanges{inner: failingRanges{}, metrics: m.metrics, layer: &b.fetched}
	if failed.ReadRange(ctx, make([]byte, 50), 0) == nil || failed.ReadRanges(ctx, []streaming.Range{{Length: 50}}, [][]byte{make([]byte, 50)}) == nil {
		t.Fatal("a failing registry read succeeded")
	}
	m.mounts[a.mountpoint], m.mounts[b.mountpoint] = a, b

	c := serveManager(t, m)
	for _, tc := range []struct {
		mountpoint string
		want       int64
		wantErr    error
	}{
		{mountpoint: "/mnt/a", want: 1124},
		{mountpoint: "/mnt/b", want: 7},
		{mountpoint: "/mnt/none", wantErr: ErrNotMounted},
	} {
		got, err := c.Fetched(ctx, tc.mountpoint)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("Fetched(%s) = %d, %v; want %d, %v", tc.mountpoint, got, err, tc.want, tc.wantErr)
		}
	}
	st, err := c.Statuses(ctx)
	if err != nil || len(st) != 2 || st[0].Mountpoint != "/mnt/a" || st[0].Fetched != 1124 || st[1].Fetched != 7 {
		t.Errorf("Statuses = %+v, %v; want /mnt/a with 1124 bytes fetched and /mnt/b with 7", st, err)
	}
}

// A mount counts the bytes of its files that reads returned, and its
// status says so beside what it fetched.
func TestStatusCountsReadBytes(t *testing.T) {
	body := bytes.Repeat([]byte("sluice"), 1000)
	m, lm, _ := managerWithFile(t, body)
	reader := lm.reader
	a, err := reader.Lookup("a")
	if err != nil {
		t.Fatal(err)
	}
	src := &source{m: lm, manager: m}
	// A read inside the file, then one that runs past its end.
	for _, off := range []int64{10, int64(len(body)) - 50} {
		if _, err := src.ReadAt(context.Background(), a, make([]byte, 100), off); err != nil && off == 10 {
			t.Fatal(err)
		}
	}
	st := m.Statuses()
	if len(st) != 1 || st[0].Read != 150 {
		t.Fatalf("statuses %+v: want one mount that read 150 bytes", st)
	}
}

// The socket writes a complete layer's original tar, checked; a layer not
// complete, or not mounted, is an error the client can tell.
func TestLayerWritesCompleteLayer(t *testing.T) {
	m, lm, tarball := managerWithFile(t, bytes.Repeat([]byte("sluice"), 100000))

	c := serveManager(t, m)
	ctx := context.Background()

	if _, err := c.Layer(ctx, "/mnt/a"); !errors.Is(err, ErrNotComplete) {
		t.Fatalf("Layer of a layer not complete: %v, want ErrNotComplete", err)
	}
	if _, err := c.Layer(ctx, "/mnt/none"); !errors.Is(err, ErrNotMounted) {
		t.Fatalf("Layer of nothing mounted: %v, want ErrNotMounted", err)
	}
	lm.complete.Store(true)
	rc, err := c.Layer(ctx, "/mnt/a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, tarball) {
		t.Fatalf("Layer wrote %d bytes (%v), want the %d of the original tar", len(got), err, len(tarball))
	}
}

// serveManager serves the manager's API on a socket of its own and returns
// a client of it.
func serveManager(t *testing.T, m *Manager) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "fm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "m.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.Handler()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return NewClient(socket)
}

// managerWithFile returns a manager serving, at /mnt/a, a layer of one
// file "a" holding body, and the layer's tar.
func managerWithFile(t *testing.T, body []byte) (*Manager, *mounted, []byte) {
	t.Helper()
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	_ = tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	_, _ = tw.Write(body)
	_ = tw.Close()
	var blob bytes.Buffer
	if _, err := streaming.Convert(context.Background(), bytes.NewReader(tarball.Bytes()), &blob, streaming.Options{}); err != nil {
		t.Fatal(err)
	}
	reader, err := streaming.Open(context.Background(), &gatedRanges{blob: blob.Bytes()}, int64(blob.Len()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Root: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.cache.Close)
	lm := &mounted{mountpoint: "/mnt/a", read: make(chan struct{}), reader: reader}
	m.mounts[lm.mountpoint] = lm
	return m, lm, tarball.Bytes()
}
