package streaming

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Media types, artifact type and annotation keys of seekable-zstd v1. See
// docs/format.md for their meaning.
const (
	// MediaTypeLayer is the media type of a converted layer: an ordinary
	// zstd-compressed tar that any runtime can pull.
	MediaTypeLayer = "application/vnd.oci.image.layer.v1.tar+zstd"
	// ArtifactType marks a streaming manifest (a referrer of the original).
	ArtifactType = "application/vnd.azure.artifact.streaming.v1"

	AnnotationTOCDigest    = "io.sluice.streaming.toc.digest"
	AnnotationTOCOffset    = "io.sluice.streaming.toc.offset"
	AnnotationTOCSize      = "io.sluice.streaming.toc.size"
	AnnotationSourceDigest = "io.sluice.streaming.source.digest"

	AnnotationFormat       = "streaming.format"
	AnnotationVersion      = "streaming.version"
	AnnotationPlatformOS   = "streaming.platform.os"
	AnnotationPlatformArch = "streaming.platform.arch"

	// FormatName and FormatVersion are the values of the streaming.format
	// and streaming.version manifest annotations.
	FormatName    = "seekable-zstd"
	FormatVersion = "v1"
)

// Byte layout constants (docs/format.md, "Skippable frames" and "Footer").
const (
	// skippableTOCMagic and skippableFooterMagic are zstd skippable-frame
	// magic numbers (0x184D2A50..0x184D2A5F); decoders skip these frames.
	skippableTOCMagic    uint32 = 0x184D2A5A
	skippableFooterMagic uint32 = 0x184D2A5B
	skippableHeaderSize         = 8

	// FooterSize is the fixed size of the footer frame at the end of a blob.
	FooterSize        = 80
	footerPayloadSize = FooterSize - skippableHeaderSize
	footerMagic       = "SLUICESZ"

	formatMajor = 1
	formatMinor = 0
)

// Footer locates the TOC. It is the last FooterSize bytes of a blob.
type Footer struct {
	// TOCOffset and TOCSize give the TOC frame: its skippable-frame header
	// and payload, exactly the bytes TOCDigest covers.
	TOCOffset int64
	TOCSize   int64
	// TOCUncompressedSize is the size of the TOC's JSON document.
	TOCUncompressedSize int64
	// TOCDigest is the sha256 of the TOC frame bytes.
	TOCDigest    [sha256.Size]byte
	Major, Minor uint16
}

// MarshalBinary encodes the footer as a FooterSize-byte skippable frame.
func (f Footer) MarshalBinary() ([]byte, error) {
	b := make([]byte, FooterSize)
	binary.LittleEndian.PutUint32(b[0:], skippableFooterMagic)
	binary.LittleEndian.PutUint32(b[4:], footerPayloadSize)
	p := b[skippableHeaderSize:]
	binary.LittleEndian.PutUint64(p[0:], uint64(f.TOCOffset))
	binary.LittleEndian.PutUint64(p[8:], uint64(f.TOCSize))
	binary.LittleEndian.PutUint64(p[16:], uint64(f.TOCUncompressedSize))
	copy(p[24:56], f.TOCDigest[:])
	binary.LittleEndian.PutUint16(p[56:], f.Major)
	binary.LittleEndian.PutUint16(p[58:], f.Minor)
	copy(p[64:72], footerMagic)
	return b, nil
}

// ParseFooter decodes and checks a footer read from the last FooterSize
// bytes of a blob of blobSize bytes. It checks that the TOC lies inside the
// blob and ends where the footer starts.
func ParseFooter(b []byte, blobSize int64) (Footer, error) {
	var f Footer
	if len(b) != FooterSize {
		return f, fmt.Errorf("%w: footer is %d bytes, want %d", ErrInvalidFormat, len(b), FooterSize)
	}
	if m := binary.LittleEndian.Uint32(b[0:]); m != skippableFooterMagic {
		return f, fmt.Errorf("%w: no footer frame (magic %#08x, want %#08x): not a seekable-zstd layer", ErrInvalidFormat, m, skippableFooterMagic)
	}
	if n := binary.LittleEndian.Uint32(b[4:]); n != footerPayloadSize {
		return f, fmt.Errorf("%w: footer frame size %d, want %d", ErrInvalidFormat, n, footerPayloadSize)
	}
	p := b[skippableHeaderSize:]
	if !bytes.Equal(p[64:72], []byte(footerMagic)) {
		return f, fmt.Errorf("%w: footer magic %q, want %q", ErrInvalidFormat, p[64:72], footerMagic)
	}
	f.Major = binary.LittleEndian.Uint16(p[56:])
	f.Minor = binary.LittleEndian.Uint16(p[58:])
	if f.Major != formatMajor {
		return f, fmt.Errorf("%w: version %d.%d (this reader reads %d.x)", ErrUnsupportedVersion, f.Major, f.Minor, formatMajor)
	}
	off, size := binary.LittleEndian.Uint64(p[0:]), binary.LittleEndian.Uint64(p[8:])
	usize := binary.LittleEndian.Uint64(p[16:])
	copy(f.TOCDigest[:], p[24:56])
	if blobSize < FooterSize || off > uint64(blobSize) || size > uint64(blobSize) || usize > 1<<62 {
		return f, fmt.Errorf("%w: footer places the TOC at offset %d size %d outside a %d-byte blob", ErrInvalidFormat, off, size, blobSize)
	}
	f.TOCOffset, f.TOCSize, f.TOCUncompressedSize = int64(off), int64(size), int64(usize)
	if f.TOCOffset+f.TOCSize != blobSize-FooterSize {
		return f, fmt.Errorf("%w: TOC at offset %d size %d does not end where the footer starts (%d)", ErrInvalidFormat, f.TOCOffset, f.TOCSize, blobSize-FooterSize)
	}
	if f.TOCSize < skippableHeaderSize {
		return f, fmt.Errorf("%w: TOC size %d is smaller than a frame header", ErrInvalidFormat, f.TOCSize)
	}
	return f, nil
}

// skippableFrame wraps payload in a zstd skippable frame with magic m.
func skippableFrame(m uint32, payload []byte) []byte {
	b := make([]byte, skippableHeaderSize, skippableHeaderSize+len(payload))
	binary.LittleEndian.PutUint32(b[0:], m)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

// skippablePayload checks that b is exactly one skippable frame with magic m
// and returns its payload.
func skippablePayload(m uint32, b []byte) ([]byte, error) {
	if len(b) < skippableHeaderSize {
		return nil, fmt.Errorf("%w: frame of %d bytes is shorter than its header", ErrInvalidFormat, len(b))
	}
	if got := binary.LittleEndian.Uint32(b); got != m {
		return nil, fmt.Errorf("%w: frame magic %#08x, want %#08x", ErrInvalidFormat, got, m)
	}
	if n := binary.LittleEndian.Uint32(b[4:]); int64(n) != int64(len(b)-skippableHeaderSize) {
		return nil, fmt.Errorf("%w: frame declares %d payload bytes but has %d", ErrInvalidFormat, n, len(b)-skippableHeaderSize)
	}
	return b[skippableHeaderSize:], nil
}
