package streaming

import "errors"

// Sentinel errors. Every error returned by this package that a caller may
// want to branch on wraps one of these with %w and a message saying what was
// wrong.
var (
	// ErrChunkVerification: a chunk's bytes did not match the sha256 (or
	// size) recorded in the TOC. The bytes are never returned; a FUSE layer
	// should answer EIO.
	ErrChunkVerification = errors.New("chunk verification failed")
	// ErrTOCVerification: the TOC did not match its expected digest.
	ErrTOCVerification = errors.New("toc verification failed")
	// ErrDiffIDMismatch: the whole uncompressed layer did not hash to the
	// expected DiffID.
	ErrDiffIDMismatch = errors.New("diffid mismatch")
	// ErrInvalidFormat: the blob is not a valid seekable-zstd layer (bad
	// footer, malformed or inconsistent TOC).
	ErrInvalidFormat = errors.New("invalid seekable-zstd layer")
	// ErrUnsupportedVersion: the footer names a format version this code
	// does not read.
	ErrUnsupportedVersion = errors.New("unsupported seekable-zstd version")
	// ErrLimitExceeded: the input is larger than a configured limit (TOC
	// size, entry count, uncompressed size, compression ratio).
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrCorruptInput: the source layer is truncated or corrupt (bad gzip or
	// zstd stream, tar whose headers or sizes are wrong).
	ErrCorruptInput = errors.New("corrupt input layer")
	// ErrUnsupportedInput: the source layer uses a compression or tar entry
	// type that cannot be converted.
	ErrUnsupportedInput = errors.New("unsupported input layer")
	// ErrNotFound: no entry of that name in the TOC.
	ErrNotFound = errors.New("entry not found")
)
