// Command peerd runs a peer's remote snapshotter as a containerd proxy
// snapshotter, for the cold start benchmark to measure beside Sluice: the
// peer's own service package with its default configuration, as its
// command would build it. Their command modules are not on the Go module
// proxy (their go.mod files have replace directives), their root modules
// are; this is the few lines of wiring their commands add.
//
//	peerd stargz --address SOCK --root DIR [--prefetch-async-size BYTES]
//	peerd soci   --address SOCK --root DIR
//	peerd prepare ...   make a peer's form of an image (see prepare.go)
//	peerd pull ...      pull an image for a peer's snapshotter (see pull.go)
//
// The registry's credentials come from PEERD_USER and PEERD_PASSWORD, for
// every host (the benchmark's registry is the only one).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/snapshots"
	fanotifyservice "github.com/containerd/stargz-snapshotter/analyzer/fanotify/service"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: peerd stargz|soci|prepare|pull ...")
	}
	peer := os.Args[1]
	switch peer {
	case "fanotify":
		// The analyzer runs this binary again as its file access monitor,
		// as ctr-remote's own fanotify command.
		if err := fanotifyservice.Serve(os.Args[2], os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
		return
	case "prepare", "pull":
		run := prepare
		if peer == "pull" {
			run = pull
		}
		if err := run(os.Args[2:]); err != nil {
			log.Fatalf("peerd %s: %v", peer, err)
		}
		return
	}
	fl := flag.NewFlagSet(peer, flag.ExitOnError)
	address := fl.String("address", "", "socket to serve the snapshots API on")
	root := fl.String("root", "", "the snapshotter's root directory")
	prefetchAsync := fl.Int64("prefetch-async-size", 0, "stargz: prefetch_async_size (0: its default, prefetch before the container starts)")
	_ = fl.Parse(os.Args[2:])
	if *address == "" || *root == "" {
		log.Fatal("--address and --root are needed")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	creds := func(host string) (string, string, error) {
		return os.Getenv("PEERD_USER"), os.Getenv("PEERD_PASSWORD"), nil
	}
	var sn snapshots.Snapshotter
	var opts []grpc.ServerOption
	var err error
	switch peer {
	case "stargz":
		sn, err = newStargz(ctx, *root, *prefetchAsync, creds)
	case "soci":
		sn, opts, err = newSOCI(ctx, *root, creds)
	default:
		err = fmt.Errorf("unknown peer %q (stargz, soci)", peer)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer sn.Close()
	rpc := grpc.NewServer(opts...)
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*address)
	ln, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		<-ctx.Done()
		rpc.Stop()
	}()
	log.Printf("%s snapshotter serving on %s", peer, *address)
	if err := rpc.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
