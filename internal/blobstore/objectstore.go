package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// URLs
	_ "gocloud.dev/blob/s3blob"    // s3:// URLs
)

// ensureBucket creates the Azure container or S3 bucket behind b when it
// does not exist, so that a new deployment needs no step outside the
// registry. Other buckets are used as they are. Credentials that may not
// look at the container are not refused here: they may still be allowed
// everything the store does with objects.
func ensureBucket(ctx context.Context, b *blob.Bucket, u *url.URL) error {
	var (
		created bool
		err     error
		az      *container.Client
		s3c     *s3.Client
	)
	switch {
	case b.As(&az):
		created, err = ensureContainer(ctx, az)
	case b.As(&s3c):
		created, err = ensureS3Bucket(ctx, s3c, u.Host)
	default:
		return nil
	}
	if err != nil && statusCode(err) == 403 {
		slog.Warn("blob container not checked: access denied; using it as it is", "url", u.Redacted(), "err", err)
		return nil
	}
	if err != nil {
		return storeErr("blob store "+u.Redacted(), err)
	}
	if created {
		slog.Info("created blob container", "url", u.Redacted())
	}
	return nil
}

// ensureContainer creates an Azure container that does not exist, and
// reports whether it did.
func ensureContainer(ctx context.Context, c *container.Client) (bool, error) {
	_, err := c.GetProperties(ctx, nil)
	if err == nil || !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		return false, err
	}
	_, err = c.Create(ctx, nil)
	if bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return false, nil // made meanwhile by another process
	}
	return err == nil, err
}

// ensureS3Bucket creates an S3 bucket that does not exist, in the client's
// region, and reports whether it did.
func ensureS3Bucket(ctx context.Context, c *s3.Client, name string) (bool, error) {
	_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &name})
	if err == nil || statusCode(err) != 404 {
		return false, err
	}
	in := &s3.CreateBucketInput{Bucket: &name}
	// us-east-1 is the default location, which S3 wants left unsaid.
	if region := c.Options().Region; region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(region),
		}
	}
	_, err = c.CreateBucket(ctx, in)
	if _, ok := errors.AsType[*types.BucketAlreadyOwnedByYou](err); ok {
		return false, nil // made meanwhile by another process
	}
	return err == nil, err
}

// abortMultipart aborts the S3 multipart upload that a failed upload of
// key left, if any. The SDK aborts it itself, but with the upload's
// context, which a failing stream has cancelled; the parts would otherwise
// take space, unseen, until a lifecycle rule drops them.
func (s *Store) abortMultipart(ctx context.Context, key string, err error) {
	mpu, ok := errors.AsType[interface {
		error
		UploadID() string
	}](err)
	var c *s3.Client
	if !ok || s.s3Bucket == "" || !s.bucket.As(&c) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	id := mpu.UploadID()
	_, err = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.s3Bucket, Key: &key, UploadId: &id})
	if _, gone := errors.AsType[*types.NoSuchUpload](err); err != nil && !gone {
		slog.Warn("multipart upload of a failed write not aborted", "bucket", s.s3Bucket, "key", key, "upload", id, "err", err)
	}
}

// openObject opens an object for reading without fetching any of it: its
// size and time come from its attributes, and its bytes from a range read
// starting where the reader was sought to.
func openObject(ctx context.Context, b *blob.Bucket, key string) (*Content, error) {
	attrs, err := b.Attributes(ctx, key)
	if err != nil {
		return nil, storeErr(key, err)
	}
	r := &rangeReader{ctx: ctx, bucket: b, key: key, size: attrs.Size}
	return &Content{ReadSeeker: r, Closer: r, Size: attrs.Size, ModTime: attrs.ModTime}, nil
}

// rangeReader reads an object from its offset on. Seeking costs nothing;
// the first read after it asks the store for the bytes from the offset to
// the end, and reads on through that one response. An HTTP Range answer,
// which seeks to the range's start and reads its length, thus fetches the
// range and not the object from its start.
type rangeReader struct {
	ctx    context.Context
	bucket *blob.Bucket
	key    string
	size   int64
	off    int64
	// body is the open range read at off, nil until a read needs it.
	body *blob.Reader
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.body == nil {
		body, err := r.bucket.NewRangeReader(r.ctx, r.key, r.off, -1, nil)
		if err != nil {
			return 0, storeErr(r.key, err)
		}
		r.body = body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err != nil && err != io.EOF {
		err = storeErr(r.key, err)
	}
	return n, err
}

func (r *rangeReader) Seek(offset int64, whence int) (int64, error) {
	off := offset
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.off
	case io.SeekEnd:
		off += r.size
	default:
		return r.off, fmt.Errorf("seek %s: invalid whence %d", r.key, whence)
	}
	if off < 0 {
		return r.off, fmt.Errorf("seek %s: negative position %d", r.key, off)
	}
	if off != r.off && r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
	r.off = off
	return off, nil
}

func (r *rangeReader) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}
