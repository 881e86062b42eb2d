package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	socisource "github.com/awslabs/soci-snapshotter/fs/source"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ctdsnapshotters "github.com/containerd/containerd/v2/pkg/snapshotters"
	stargzsource "github.com/containerd/stargz-snapshotter/fs/source"
)

// pull pulls an image for a peer's snapshotter as its own client does
// (`ctr-remote image rpull`, `soci image rpull`): containerd's pull and
// unpack, with the peer's labels on each layer. It prints when the pull
// began (Unix nanoseconds) for the benchmark to time the first line from.
//
//	peerd pull --containerd SOCK --snapshotter stargz|soci REF
func pull(args []string) error {
	fl := flag.NewFlagSet("pull", flag.ExitOnError)
	sock := fl.String("containerd", "", "containerd socket")
	sn := fl.String("snapshotter", "", "stargz or soci")
	_ = fl.Parse(args)
	ref := fl.Arg(0)
	ctx := namespaces.WithNamespace(context.Background(), namespaces.Default)
	client, err := containerd.New(*sock)
	if err != nil {
		return err
	}
	defer client.Close()
	var wrapper func(images.Handler) images.Handler
	switch *sn {
	case "stargz":
		// rpull's prefetch size.
		wrapper = stargzsource.AppendDefaultLabelsHandlerWrapper(ref, 10<<20)
	case "soci":
		// No index digest: the snapshotter finds the SOCI index v2
		// through the image manifest's annotation.
		wrapper = socisource.AppendDefaultLabelsHandlerWrapper("", ctdsnapshotters.AppendInfoHandlerWrapper(ref))
	default:
		return fmt.Errorf("unknown snapshotter %q", *sn)
	}
	fmt.Printf("start %d\n", time.Now().UnixNano())
	_, err = client.Pull(ctx, ref, containerd.WithResolver(newResolver()), containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*sn), containerd.WithImageHandlerWrapper(wrapper))
	if err != nil {
		return err
	}
	fmt.Printf("pulled %d\n", time.Now().UnixNano())
	return nil
}
