package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	chunkSize, fileChunkSize int64
	level                    int
}

func newConvertCmd() *cobra.Command {
	var f convertFlags
	cmd := &cobra.Command{
		Use:   "convert (--layer IN OUT | oci:DIR[:TAG])",
		Short: "Convert a layer or an OCI-layout image to the seekable-zstd streaming format",
		Long: `Convert makes the streaming form of an image without a server.

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
      per Linux platform.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if f.layer {
				return cobra.ExactArgs(2)(cmd, args)
			}
			if len(args) != 1 || !strings.HasPrefix(args[0], "oci:") {
				return errors.New("want --layer IN OUT, or one oci:DIR[:TAG] argument")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := streaming.Options{ChunkSize: f.chunkSize, FileChunkSize: f.fileChunkSize, Level: f.level}
			if f.layer {
				return convertLayerFile(cmd.Context(), cmd.OutOrStdout(), args[0], args[1], opts, f.verify)
			}
			return convertLayout(cmd.Context(), cmd.OutOrStdout(), args[0], opts)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.layer, "layer", false, "convert a single layer file IN to OUT")
	fl.BoolVar(&f.verify, "verify", false, "with --layer: read the result back and check every chunk and the DiffID")
	fl.Int64Var(&f.chunkSize, "chunk-size", 0, fmt.Sprintf("close a chunk at the first entry boundary after this many bytes (default %d)", streaming.DefaultChunkSize))
	fl.Int64Var(&f.fileChunkSize, "file-chunk-size", 0, fmt.Sprintf("split files larger than this at this size (default %d)", streaming.DefaultFileChunkSize))
	fl.IntVar(&f.level, "level", 0, fmt.Sprintf("zstd level (default %d)", streaming.DefaultLevel))
	return cmd
}

// layerOutput is what convert --layer prints.
type layerOutput struct {
	*streaming.Result
	MediaType   string            `json:"mediaType"`
	Annotations map[string]string `json:"annotations"`
}

func convertLayerFile(ctx context.Context, stdout io.Writer, in, out string, opts streaming.Options, verify bool) error {
	src := os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
		opts.Progress = progressPrinter(f)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	res, err := streaming.Convert(ctx, src, tmp, opts)
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
	return printJSON(stdout, layerOutput{Result: res, MediaType: streaming.MediaTypeLayer, Annotations: res.Annotations()})
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

// progressPrinter shows a percentage on a terminal's stderr.
func progressPrinter(f *os.File) func(int64) {
	st, err := f.Stat()
	es, err2 := os.Stderr.Stat()
	if err != nil || err2 != nil || st.Size() == 0 || es.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	total := st.Size()
	return func(n int64) {
		fmt.Fprintf(os.Stderr, "\rconverting: %3d%%", n*100/total)
		if n >= total {
			fmt.Fprintln(os.Stderr)
		}
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

func convertLayout(ctx context.Context, stdout io.Writer, ref string, opts streaming.Options) error {
	dir, tag := parseOCIRef(ref)
	cs, err := ocidir.Convert(ctx, dir, tag, opts)
	if err != nil {
		return err
	}
	type manifestOut struct {
		Platform string `json:"platform"`
		Subject  string `json:"subject"`
		Manifest any    `json:"manifest"`
		Layers   int    `json:"layers"`
	}
	var out []manifestOut
	for _, c := range cs {
		p := c.Platform.OS + "/" + c.Platform.Architecture
		if c.Platform.Variant != "" {
			p += "/" + c.Platform.Variant
		}
		out = append(out, manifestOut{Platform: p, Subject: c.Subject.Digest.String(), Manifest: c.Manifest, Layers: len(c.Layers)})
	}
	return printJSON(stdout, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
