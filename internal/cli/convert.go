package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/streaming/ocidir"
)

type convertFlags struct {
	layer                    bool
	verify                   bool
	force                    bool
	chunkSize, fileChunkSize int64
	level                    int
	signKey                  string
	sign                     bool
}

func (a *App) newConvertCmd() *cobra.Command {
	var f convertFlags
	cmd := &cobra.Command{
		Use:   "convert (--layer IN OUT | oci:DIR[:TAG] | [REGISTRY/]REPOSITORY:TAG)",
		Short: "Convert a layer or an image to the seekable-zstd streaming format, on this machine",
		Long: `Convert makes the streaming form of an image on this machine, for a layer
file, an OCI layout, or an image in any OCI registry.

  sluice convert --layer IN OUT
      converts one layer (tar, tar+gzip or tar+zstd, detected by content;
      "-" for stdin) into a seekable-zstd layer at OUT and prints its
      descriptor.

  sluice convert oci:DIR[:TAG]
      converts the image TAG (or the only image) of the OCI layout DIR: the
      converted layers and a streaming manifest (the original config, subject
      = the original manifest, artifactType
      application/vnd.azure.artifact.streaming.v1) are written into DIR and
      listed in its index.json. An image index gets one streaming manifest
      per Linux platform.

  sluice convert [REGISTRY/]REPOSITORY:TAG
      pulls the image from a registry (REGISTRY is host[:port], a URL or a
      name configured with sluice login; without it, --registry or the
      default registry), converts it here and pushes the converted layers
      and the streaming manifest back as a referrer of the image: through
      the referrers API, or, for a registry without it, in the referrers
      tag sha256-<hex> of the image. An index gets one streaming manifest
      per Linux platform, each with the index as subject, as the Sluice
      registry makes them. An image that already has a streaming artifact
      is skipped unless --force.

      With --sign-key FILE (a PEM EC P-256 private key, created if there is
      no such file) each streaming manifest is signed, and the signature
      pushed beside it as a referrer of the image: nodes configured to trust
      that key (trust: keys, trustKeys: [its public key]) mount it, from any
      registry. --sign uses streaming-signing-key.pem in the user's
      configuration directory. A key created is announced with its public
      key, written beside it as FILE.pub. An image whose artifact the key has
      not signed yet is converted again: conversion is deterministic, so that
      adds the signature to the same artifact.

Only Linux images, of any architecture, can stream: an image of another
platform, or whose config sets no os, is refused with UNSUPPORTED_PLATFORM,
as the registry's conversions refuse it.`,
		Example: `  sluice convert --layer --verify layer.tar.gz layer.szst
  sluice convert oci:./my-image:1.0
  sluice convert registry.example.com/team/app:1.0
  sluice convert -r myregistry team/app:1.0 -o table
  sluice convert --sign-key ci-signing.pem registry.example.com/team/app:1.0
  sluice convert --sign team/app:1.0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if f.layer {
				return cobra.ExactArgs(2)(cmd, args)
			}
			if len(args) != 1 {
				return errors.New("want --layer IN OUT, one oci:DIR[:TAG] argument, or one [REGISTRY/]REPOSITORY:TAG image")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := streaming.Options{ChunkSize: f.chunkSize, FileChunkSize: f.fileChunkSize, Level: f.level}
			local := f.layer || strings.HasPrefix(args[0], "oci:")
			if (f.signKey != "" || f.sign) && local {
				return usageErrorf("--sign-key signs the streaming artifacts convert pushes to a registry; a layer file or an OCI layout is not pushed")
			}
			switch {
			case f.layer:
				return a.convertLayerFile(cmd.Context(), args[0], args[1], opts, f.verify)
			case strings.HasPrefix(args[0], "oci:"):
				return a.convertLayout(cmd.Context(), args[0], opts)
			}
			signer, err := a.signer(f.signKey, f.sign)
			if err != nil {
				return err
			}
			return a.convertRemote(cmd.Context(), args[0], opts, f.force, signer)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.layer, "layer", false, "convert a single layer file IN to OUT")
	fl.BoolVar(&f.verify, "verify", false, "with --layer: read the result back and check every chunk and the DiffID")
	fl.BoolVar(&f.force, "force", false, "for a registry image: convert even if it has a streaming artifact")
	fl.Int64Var(&f.chunkSize, "chunk-size", 0, fmt.Sprintf("close a chunk at the first entry boundary after this many bytes (default %d)", streaming.DefaultChunkSize))
	fl.Int64Var(&f.fileChunkSize, "file-chunk-size", 0, fmt.Sprintf("split files larger than this at this size (default %d)", streaming.DefaultFileChunkSize))
	fl.IntVar(&f.level, "level", 0, fmt.Sprintf("zstd level (default %d)", streaming.DefaultLevel))
	fl.StringVar(&f.signKey, "sign-key", "", "for a registry image: sign the streaming artifacts with this PEM EC P-256 key (created if missing)")
	fl.BoolVar(&f.sign, "sign", false, "for a registry image: sign with streaming-signing-key.pem in the configuration directory (created on first use)")
	cmd.MarkFlagsMutuallyExclusive("sign", "sign-key")
	return cmd
}

// layerOutput is what convert --layer prints.
type layerOutput struct {
	*streaming.Result
	MediaType   string            `json:"mediaType"`
	Annotations map[string]string `json:"annotations"`
}

func (a *App) convertLayerFile(ctx context.Context, in, out string, opts streaming.Options, verify bool) error {
	src := a.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
		if st, err := f.Stat(); err == nil && st.Size() > 0 {
			opts.Progress = a.byteProgress("Converting", st.Size())
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	res, err := streaming.Convert(ctx, src, tmp, opts)
	if opts.Progress != nil {
		opts.Progress(-1)
	}
	if err != nil {
		return fmt.Errorf("converting %s: %w", in, err)
	}
	if verify {
		if err := verifyLayer(ctx, tmp, res); err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	return a.print(layerOutput{Result: res, MediaType: streaming.MediaTypeLayer, Annotations: res.Annotations()}, nil)
}

func verifyLayer(ctx context.Context, f *os.File, res *streaming.Result) error {
	r, err := streaming.Open(ctx, streaming.ReaderAtRanges(f), res.Size,
		streaming.WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), streaming.WithDiffID(res.DiffID))
	if err != nil {
		return fmt.Errorf("verifying the converted layer: %w", err)
	}
	defer r.Close()
	if err := r.FetchAll(ctx, nil); err != nil {
		return fmt.Errorf("verifying the converted layer: %w", err)
	}
	return nil
}

// byteProgress returns a progress callback drawing a bar on a terminal's
// stderr (nil elsewhere) for total bytes; -1 clears it.
func (a *App) byteProgress(label string, total int64) func(int64) {
	if !a.interactive() || total <= 0 {
		return nil
	}
	bar := newProgressBar(a, label)
	return func(n int64) {
		if n < 0 {
			bar.clear()
			return
		}
		bar.draw(&operation{Status: "Running", ProgressBytes: n, TotalBytes: total})
	}
}

// parseOCIRef splits oci:DIR[:TAG]; a final ":x" is a tag unless it
// contains a slash.
func parseOCIRef(ref string) (dir, tag string) {
	dir = strings.TrimPrefix(ref, "oci:")
	if i := strings.LastIndexByte(dir, ':'); i > 0 && !strings.Contains(dir[i+1:], "/") {
		return dir[:i], dir[i+1:]
	}
	return dir, ""
}

// convertedImage is one streaming manifest convert made (or found).
type convertedImage struct {
	Platform string `json:"platform"`
	Subject  string `json:"subject"`
	Manifest any    `json:"manifest"`
	Layers   int    `json:"layers"`
	// Repository, ReferrersSchema and Existing are set for registry images.
	Repository      string `json:"repository,omitempty"`
	ReferrersSchema string `json:"referrersSchema,omitempty"`
	Existing        bool   `json:"existing,omitempty"`
	// SignedBy is the id of the key that signed the artifact, and
	// Signature the digest of the signature pushed, with --sign-key.
	SignedBy  string `json:"signedBy,omitempty"`
	Signature string `json:"signature,omitempty"`
}

var convertTable = columns("", [2]string{"Platform", "platform"}, [2]string{"Subject", "subject"},
	[2]string{"Manifest", "manifest.digest"}, [2]string{"Layers", "layers"}, [2]string{"ReferrersSchema", "referrersSchema"}, [2]string{"Existing", "existing"})

func (a *App) convertLayout(ctx context.Context, ref string, opts streaming.Options) error {
	dir, tag := parseOCIRef(ref)
	cs, err := ocidir.Convert(ctx, dir, tag, opts)
	if err != nil {
		return withPlatformCode(err)
	}
	out := []convertedImage{}
	for _, c := range cs {
		out = append(out, convertedImage{Platform: platformString(c.Platform.OS, c.Platform.Architecture, c.Platform.Variant),
			Subject: c.Subject.Digest.String(), Manifest: c.Manifest, Layers: len(c.Layers)})
	}
	return a.print(out, convertTable)
}

// withPlatformCode gives a platform refusal the code the registry's
// conversions fail with, in front of its message, so both read alike.
func withPlatformCode(err error) error {
	var pe *streaming.PlatformError
	if !errors.As(err, &pe) {
		return err
	}
	return platformCoded{err: err, pe: pe}
}

type platformCoded struct {
	err error
	pe  *streaming.PlatformError
}

func (p platformCoded) Error() string {
	return strings.Replace(p.err.Error(), p.pe.Error(), "UNSUPPORTED_PLATFORM: "+p.pe.Error(), 1)
}

func (p platformCoded) Unwrap() error { return p.err }

func platformString(os, arch, variant string) string {
	p := os + "/" + arch
	if variant != "" {
		p += "/" + variant
	}
	return p
}
