// Package criproxy is a transparent gRPC proxy in front of containerd's CRI
// services, for kubelet's --image-service-endpoint (and, optionally, its
// runtime endpoint). Every call goes to the runtime unchanged, byte for
// byte; a PullImage is read on its way through, so that the registry
// credentials kubelet sends with it (a pod's image pull secret, a
// credential provider's answer) can be kept for the lazy fetches of the
// image's layers, which happen later and outside the pull.
package criproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullHook is told of each PullImage before it goes to the runtime, with
// the image and the credentials it carries (nil when none); the function it
// returns (may be nil) is called with the pull's outcome.
type PullHook func(ctx context.Context, image string, auth *runtimeapi.AuthConfig) (done func(err error))

// ImageInfo gives entries to add to the verbose information of an image's
// ImageStatus answer (what `crictl inspecti` shows under "info"); nil or
// empty adds nothing.
type ImageInfo func(image *runtimeapi.Image) map[string]string

// imageStatusMethod is the call whose answers ImageInfo adds to.
const imageStatusMethod = "/runtime.v1.ImageService/ImageStatus"

// pullMethods are the PullImage methods of CRI v1 and of v1alpha2, whose
// messages are the same on the wire.
var pullMethods = map[string]bool{
	"/runtime.v1.ImageService/PullImage":       true,
	"/runtime.v1alpha2.ImageService/PullImage": true,
}

// maxMessage bounds a message either way, as kubelet's CRI client does.
const maxMessage = 16 << 20

// Proxy forwards CRI calls to the runtime.
type Proxy struct {
	upstream  *grpc.ClientConn
	onPull    PullHook
	imageInfo ImageInfo
	log       *slog.Logger
}

// AddImageInfo has the proxy add info's entries to the verbose answers of
// ImageStatus.
func (p *Proxy) AddImageInfo(info ImageInfo) { p.imageInfo = info }

// New returns a proxy to the runtime's socket (a path, or unix://path).
func New(upstream string, onPull PullHook, log *slog.Logger) (*Proxy, error) {
	target := upstream
	if !strings.HasPrefix(target, "unix://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("CRI upstream %s: %w", upstream, err)
	}
	return &Proxy{upstream: conn, onPull: onPull, log: log}, nil
}

// Close closes the connection to the runtime.
func (p *Proxy) Close() error { return p.upstream.Close() }

// Server returns a gRPC server that forwards every call through p.
func (p *Proxy) Server() *grpc.Server {
	return grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(p.forward),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage))
}

// Listen opens the proxy's unix socket at path (replacing a stale one),
// readable and writable by root only.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("CRI proxy: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// forward relays one call, of any kind (unary or streaming), to the
// runtime: metadata, messages both ways, headers, trailers and status.
func (p *Proxy) forward(_ any, in grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(in)
	if !ok {
		return status.Error(codes.Internal, "CRI proxy: no method name in the stream")
	}
	ctx, cancel := context.WithCancel(in.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	for k := range md {
		if strings.HasPrefix(k, ":") {
			delete(md, k)
		}
	}
	// A PullImage is read before it goes on: the runtime's pull prepares
	// the image's snapshots, and those need the pull's credentials.
	var first *frame
	var done func(error)
	if pullMethods[method] {
		first = &frame{}
		if err := in.RecvMsg(first); err != nil {
			return err
		}
		done = p.pull(ctx, first)
	}
	out, err := p.upstream.NewStream(metadata.NewOutgoingContext(ctx, md),
		&grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		if done != nil {
			done(err)
		}
		return err
	}
	go func() {
		if first != nil {
			if err := out.SendMsg(first); err != nil {
				// The runtime ended the call; its status comes with
				// the next receive.
				return
			}
		}
		for {
			f := &frame{}
			if err := in.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = out.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := out.SendMsg(f); err != nil {
				return
			}
		}
	}()
	var edit func(*frame)
	if method == imageStatusMethod && p.imageInfo != nil {
		edit = p.addImageInfo
	}
	err = p.relayBack(in, out, edit)
	if done != nil {
		done(err)
	}
	return err
}

// relayBack copies the runtime's header, messages (through edit, when
// set) and trailer to the client, and returns the runtime's final status.
func (p *Proxy) relayBack(in grpc.ServerStream, out grpc.ClientStream, edit func(*frame)) error {
	headerSent := false
	for {
		f := &frame{}
		err := out.RecvMsg(f)
		if !headerSent {
			if h, herr := out.Header(); herr == nil && len(h) > 0 {
				_ = in.SendHeader(h)
			}
			headerSent = true
		}
		if err != nil {
			in.SetTrailer(out.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if edit != nil {
			edit(f)
		}
		if err := in.SendMsg(f); err != nil {
			return err
		}
	}
}

// addImageInfo adds the ImageInfo entries to a verbose ImageStatus
// answer; an answer it cannot read goes on as it is.
func (p *Proxy) addImageInfo(f *frame) {
	var resp runtimeapi.ImageStatusResponse
	if err := proto.Unmarshal(f.payload, &resp); err != nil || resp.GetImage() == nil || resp.Info == nil {
		// Info is set only when kubelet or crictl asked for verbose.
		return
	}
	extra := p.imageInfo(resp.GetImage())
	if len(extra) == 0 {
		return
	}
	for k, v := range extra {
		resp.Info[k] = v
	}
	b, err := proto.Marshal(&resp)
	if err != nil {
		p.log.Warn("CRI proxy: could not add to an ImageStatus answer", "err", err)
		return
	}
	f.payload = b
}

// pull reads a PullImage request on its way and tells the hook.
func (p *Proxy) pull(ctx context.Context, f *frame) func(error) {
	if p.onPull == nil {
		return nil
	}
	var req runtimeapi.PullImageRequest
	if err := proto.Unmarshal(f.payload, &req); err != nil {
		p.log.Warn("CRI proxy: a PullImage request does not decode; forwarded as it is", "err", err)
		return nil
	}
	return p.onPull(ctx, req.GetImage().GetImage(), req.GetAuth())
}

// frame is one message as bytes, never decoded on its way through.
type frame struct{ payload []byte }

// rawCodec passes frames through; it is named "proto" so that the calls'
// content type stays what both ends expect.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("CRI proxy: cannot send %T", v)
	}
	return f.payload, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("CRI proxy: cannot receive into %T", v)
	}
	f.payload = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
