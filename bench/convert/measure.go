package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/internal/streaming"
)

// cost is the wall and CPU time of one conversion.
type cost struct {
	wall, cpu time.Duration
	outSize   int64
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f and returns its wall and process CPU time. Nothing else
// runs in this process meanwhile, so process CPU time is f's.
func measure(f func() (int64, error)) (cost, error) {
	c0, t0 := cpuTime(), time.Now()
	n, err := f()
	return cost{wall: time.Since(t0), cpu: cpuTime() - c0, outSize: n}, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// convertSeekable converts layer into out with the streaming converter.
func convertSeekable(layer, out string, opts streaming.Options) (cost, *streaming.Result, error) {
	var res *streaming.Result
	c, err := measure(func() (int64, error) {
		in, err := os.Open(layer)
		if err != nil {
			return 0, err
		}
		defer in.Close()
		f, err := os.Create(out)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		bw := bufio.NewWriterSize(f, 1<<20)
		res, err = streaming.Convert(context.Background(), in, bw, opts)
		if err != nil {
			return 0, err
		}
		return res.Size, bw.Flush()
	})
	return c, res, err
}

// convertEStargz builds an eStargz blob (gzip, its default level) or its
// zstd:chunked variant, as the stargz-snapshotter library does.
func convertEStargz(layer string, zstdChunked bool) (cost, error) {
	return measure(func() (int64, error) {
		f, err := os.Open(layer)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return 0, err
		}
		var opts []estargz.Option
		if zstdChunked {
			opts = append(opts, estargz.WithCompression(struct {
				*zstdchunked.Compressor
				*zstdchunked.Decompressor
			}{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault}, &zstdchunked.Decompressor{}}))
		}
		blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
		if err != nil {
			return 0, fmt.Errorf("estargz build: %w", err)
		}
		defer blob.Close()
		cw := &countWriter{w: io.Discard}
		_, err = io.Copy(cw, blob)
		return cw.n, err
	})
}

// recompressFloor is the least work any converter must do: gunzip the
// layer and zstd-compress the same bytes as one stream at the same level.
func recompressFloor(layer string, level int) (cost, error) {
	return measure(func() (int64, error) {
		f, err := os.Open(layer)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return 0, err
		}
		cw := &countWriter{w: io.Discard}
		zw, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)))
		if err != nil {
			return 0, err
		}
		if _, err := io.Copy(zw, zr); err != nil {
			return 0, err
		}
		if err := zw.Close(); err != nil {
			return 0, err
		}
		return cw.n, nil
	})
}
