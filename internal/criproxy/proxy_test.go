package criproxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeServer answers a few CRI calls the way a runtime does, and notes
// what reached it.
type runtimeServer struct {
	runtimeapi.UnimplementedImageServiceServer
	runtimeapi.UnimplementedRuntimeServiceServer

	mu     sync.Mutex
	pulled []*runtimeapi.PullImageRequest
	md     metadata.MD
}

func (s *runtimeServer) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	s.mu.Lock()
	s.pulled = append(s.pulled, req)
	s.md, _ = metadata.FromIncomingContext(ctx)
	s.mu.Unlock()
	if req.GetImage().GetImage() == "reg/denied:1" {
		return nil, status.Error(codes.Unknown, "401 Unauthorized")
	}
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:pulled-" + req.GetImage().GetImage()}, nil
}

func (s *runtimeServer) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	if req.GetImage().GetImage() != "reg/app:1" {
		return nil, status.Errorf(codes.NotFound, "no image %s", req.GetImage().GetImage())
	}
	resp := &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:app", RepoTags: []string{"reg/app:1"}}}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": `{"runtime":"own"}`}
	}
	return resp, nil
}

func (s *runtimeServer) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	for _, id := range []string{"c1", "c2", "c3"} {
		if err := stream.Send(&runtimeapi.ContainerEventResponse{ContainerId: id}); err != nil {
			return err
		}
	}
	return nil
}

type pullSeen struct {
	image string
	auth  *runtimeapi.AuthConfig
	err   error
}

func TestProxy(t *testing.T) {
	dir, err := os.MkdirTemp("", "criproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	upstreamSock := filepath.Join(dir, "runtime.sock")
	uln, err := net.Listen("unix", upstreamSock)
	if err != nil {
		t.Fatal(err)
	}
	rt := &runtimeServer{}
	usrv := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(usrv, rt)
	runtimeapi.RegisterRuntimeServiceServer(usrv, rt)
	go usrv.Serve(uln)
	t.Cleanup(usrv.Stop)

	var mu sync.Mutex
	var seen []pullSeen
	hook := func(_ context.Context, image string, a *runtimeapi.AuthConfig) func(error) {
		mu.Lock()
		seen = append(seen, pullSeen{image: image, auth: a})
		i := len(seen) - 1
		mu.Unlock()
		// The hook runs before the runtime sees the pull.
		rt.mu.Lock()
		n := len(rt.pulled)
		rt.mu.Unlock()
		if n != i {
			t.Errorf("the runtime had %d pulls when the hook was told of pull %d", n, i+1)
		}
		return func(err error) {
			mu.Lock()
			seen[i].err = err
			mu.Unlock()
		}
	}
	p, err := New(upstreamSock, hook, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	proxySock := filepath.Join(dir, "sub", "cri.sock")
	ln, err := Listen(proxySock)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(proxySock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the proxy's socket: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	p.AddImageInfo(func(img *runtimeapi.Image) map[string]string {
		if img.GetId() == "sha256:app" {
			return map[string]string{"added": img.GetRepoTags()[0]}
		}
		return nil
	})
	srv := p.Server()
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("unix://"+proxySock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	images, runtime := runtimeapi.NewImageServiceClient(conn), runtimeapi.NewRuntimeServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "kept")

	auth := &runtimeapi.AuthConfig{Username: "u", Password: "p"}
	resp, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg/app:1"}, Auth: auth})
	if err != nil || resp.GetImageRef() != "sha256:pulled-reg/app:1" {
		t.Fatalf("PullImage through the proxy: %v, %v", resp, err)
	}
	_, err = images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "reg/denied:1"}})
	if status.Code(err) != codes.Unknown || status.Convert(err).Message() != "401 Unauthorized" {
		t.Errorf("a refused pull answered %v, want the runtime's status", err)
	}
	mu.Lock()
	if len(seen) != 2 || seen[0].image != "reg/app:1" || seen[0].auth.GetPassword() != "p" || seen[0].err != nil ||
		seen[1].image != "reg/denied:1" || seen[1].auth != nil || status.Code(seen[1].err) != codes.Unknown {
		t.Errorf("the hook saw %+v", seen)
	}
	mu.Unlock()
	rt.mu.Lock()
	if len(rt.pulled) != 2 || rt.pulled[0].GetAuth().GetUsername() != "u" || rt.md.Get("x-test")[0] != "kept" {
		t.Errorf("the runtime got %v with metadata %v", rt.pulled, rt.md)
	}
	rt.mu.Unlock()

	if _, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "x"}}); status.Code(err) != codes.NotFound {
		t.Errorf("ImageStatus answered %v, want NotFound from the runtime", err)
	}
	// A verbose ImageStatus gets the added entries beside the runtime's;
	// a plain one is left as the runtime gave it.
	st, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "reg/app:1"}, Verbose: true})
	if err != nil || st.GetInfo()["added"] != "reg/app:1" || st.GetInfo()["info"] != `{"runtime":"own"}` || st.GetImage().GetId() != "sha256:app" {
		t.Errorf("verbose ImageStatus through the proxy: %v, %v", st, err)
	}
	st, err = images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "reg/app:1"}})
	if err != nil || len(st.GetInfo()) != 0 || st.GetImage().GetId() != "sha256:app" {
		t.Errorf("ImageStatus through the proxy: %v, %v", st, err)
	}
	if _, err := images.ListImages(ctx, &runtimeapi.ListImagesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("a call the runtime does not serve answered %v, want Unimplemented", err)
	}
	stream, err := runtime.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.GetContainerId())
	}
	if len(ids) != 3 || ids[2] != "c3" {
		t.Errorf("container events through the proxy: %v", ids)
	}
}
