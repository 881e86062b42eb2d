package client

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/streaming"
)

// maxRangesPerRequest bounds a multi-range request, keeping its Range
// header well under servers' header limits.
const maxRangesPerRequest = 32

// BlobRanges reads byte ranges of one blob with HTTP range requests: the
// streaming reader's RangeReader (and MultiRangeReader: several ranges in
// one multipart request) over a registry.
type BlobRanges struct {
	c    *Client
	repo string
	url  string
	size int64
	// OnFetch, when set, is told the bytes each response carried.
	OnFetch func(n int64)
}

var _ streaming.MultiRangeReader = (*BlobRanges)(nil)

// BlobRanges returns a range reader of blob dgst (size bytes) in repo.
func (c *Client) BlobRanges(repo string, dgst digest.Digest, size int64) *BlobRanges {
	return &BlobRanges{c: c, repo: repo, url: c.URL("/v2/" + repo + "/blobs/" + dgst.String()), size: size}
}

// ReadRange fills p with the bytes at off.
func (b *BlobRanges) ReadRange(ctx context.Context, p []byte, off int64) error {
	return b.ReadRanges(ctx, []streaming.Range{{Offset: off, Length: int64(len(p))}}, [][]byte{p})
}

// ReadRanges fills bufs[i] with ranges[i], asking for up to 32 ranges per
// request.
func (b *BlobRanges) ReadRanges(ctx context.Context, ranges []streaming.Range, bufs [][]byte) error {
	for len(ranges) > 0 {
		n := min(len(ranges), maxRangesPerRequest)
		if err := b.request(ctx, ranges[:n], bufs[:n]); err != nil {
			return err
		}
		ranges, bufs = ranges[n:], bufs[n:]
	}
	return nil
}

func (b *BlobRanges) request(ctx context.Context, ranges []streaming.Range, bufs [][]byte) error {
	spec := make([]string, len(ranges))
	for i, r := range ranges {
		if r.Offset < 0 || r.Length <= 0 || r.Offset+r.Length > b.size {
			return fmt.Errorf("range %d+%d outside blob of %d bytes", r.Offset, r.Length, b.size)
		}
		spec[i] = fmt.Sprintf("%d-%d", r.Offset, r.Offset+r.Length-1)
	}
	req, err := http.NewRequest("GET", b.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes="+strings.Join(spec, ","))
	resp, err := b.c.Do(ctx, req, "repository:"+b.repo+":pull")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", b.url, err)
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	if b.OnFetch != nil {
		body = &countingReader{r: body, add: b.OnFetch}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// No range support: take the ranges out of the whole blob.
		return fillFromWhole(body, ranges, bufs)
	default:
		return fmt.Errorf("fetch %s: %w", b.url, ErrorFrom(resp))
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err == nil && mt == "multipart/byteranges" {
		return fillFromParts(multipart.NewReader(body, params["boundary"]), ranges, bufs)
	}
	start, _, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", b.url, err)
	}
	// One part: the server may have merged the ranges into one span.
	return fillFromSpan(body, start, ranges, bufs)
}

// fillFromSpan copies the ranges out of one contiguous span starting at
// start, the ranges being in increasing order.
func fillFromSpan(body io.Reader, start int64, ranges []streaming.Range, bufs [][]byte) error {
	pos := start
	for i, r := range ranges {
		if r.Offset < pos {
			return fmt.Errorf("server answered a span starting at %d for a range at %d", start, r.Offset)
		}
		if _, err := io.CopyN(io.Discard, body, r.Offset-pos); err != nil {
			return fmt.Errorf("range answer: %w", err)
		}
		if _, err := io.ReadFull(body, bufs[i]); err != nil {
			return fmt.Errorf("range answer: %w", err)
		}
		pos = r.Offset + r.Length
	}
	return nil
}

func fillFromWhole(body io.Reader, ranges []streaming.Range, bufs [][]byte) error {
	return fillFromSpan(body, 0, ranges, bufs)
}

// fillFromParts matches the parts of a multipart/byteranges answer to the
// ranges by their Content-Range.
func fillFromParts(mr *multipart.Reader, ranges []streaming.Range, bufs [][]byte) error {
	filled := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("multipart range answer: %w", err)
		}
		start, end, err := parseContentRange(part.Header.Get("Content-Range"))
		if err != nil {
			return err
		}
		// A part may cover one or several requested ranges.
		var idx []int
		for i, r := range ranges {
			if r.Offset >= start && r.Offset+r.Length-1 <= end {
				idx = append(idx, i)
			}
		}
		sub := make([]streaming.Range, len(idx))
		subBufs := make([][]byte, len(idx))
		for k, i := range idx {
			sub[k], subBufs[k] = ranges[i], bufs[i]
		}
		if err := fillFromSpan(part, start, sub, subBufs); err != nil {
			return err
		}
		filled += len(idx)
	}
	if filled != len(ranges) {
		return fmt.Errorf("multipart range answer covered %d of %d ranges", filled, len(ranges))
	}
	return nil
}

// parseContentRange reads "bytes start-end/total".
func parseContentRange(s string) (start, end int64, err error) {
	v, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return 0, 0, fmt.Errorf("unexpected Content-Range %q", s)
	}
	v, _, _ = strings.Cut(v, "/")
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return 0, 0, fmt.Errorf("unexpected Content-Range %q", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || end < start {
		return 0, 0, fmt.Errorf("unexpected Content-Range %q", s)
	}
	return start, end, nil
}

type countingReader struct {
	r   io.Reader
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(int64(n))
	}
	return n, err
}
