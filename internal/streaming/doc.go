// Package streaming implements seekable-zstd v1, the form a layer takes so
// that a node can read any file of it with a few small range requests
// (DESIGN.md section 4; the byte layout is docs/format.md).
//
// A converted layer is an ordinary zstd stream that decompresses to exactly
// the original tar (same DiffID), cut into independent zstd frames
// ("chunks"), followed by the table of contents (every entry and the chunk
// table with each chunk's sha256) in a skippable frame and a fixed-size
// footer. The package is a pure library: it knows nothing of registries or
// HTTP. Three users build on it:
//
//   - the conversion service and `sluice convert` call Convert with the
//     source layer (tar, tar+gzip or tar+zstd, detected by magic bytes) and
//     get a Result: blob digest and size, DiffID, the TOC's location, and
//     Descriptor/Annotations for the streaming manifest (see Manifest);
//   - the node snapshotter opens a blob with Open over any RangeReader (a
//     file, an io.ReaderAt, HTTP range requests; a MultiRangeReader answers
//     several ranges at once), lists Entries, resolves hard links with
//     DataEntry, reads with ReadAt (only the chunks needed, adjacent ones
//     coalesced, each verified before use, shared through a ChunkCache), and
//     completes a layer in the background with FetchAll, which also checks
//     the DiffID;
//   - fuzzers and tools use ParseFooter and DecodeTOC directly.
//
// Verification failures wrap ErrChunkVerification, ErrTOCVerification or
// ErrDiffIDMismatch; hostile input (truncated or corrupt compression, a tar
// that lies about sizes, decompression bombs, oversized or inconsistent
// TOCs) fails with ErrCorruptInput, ErrLimitExceeded or ErrInvalidFormat
// and a message saying what was wrong; a refusal by one of the Limits is a
// *LimitError naming the limit, raised as the tar entry that crosses it is
// read. Convert's heap is bounded by Options.MemoryBudget whatever the
// layer: it writes the TOC while it reads the tar, one entry at a time,
// and moves it to a temporary file once it outgrows a few MiB. Names that
// escape the layer root ("..", absolute) are kept as data and flagged
// Entry.Unsafe.
//
// # Defaults, and how they were chosen
//
// Measured with bench/convert on the two Debian bookworm layers of
// bench/images/build.sh (2 cores; docs/benchmarks.md has the full tables):
// python3, 267 MB of tar, 119 MB gzip; numpy+scipy+gcc, 1110 MB of tar,
// 429 MB gzip. "4 KiB fetch" is the median (p90) of compressed bytes fetched
// to read one file of 3.5–4.5 KiB from a cold cache.
//
// DefaultChunkSize = 256 KiB. A chunk ends at the first entry boundary
// after this many bytes. On the python3 layer (large-file split 4 MiB):
//
//	chunk    output/gzip  4 KiB fetch
//	128 KiB  1.008         40 KiB (88)
//	256 KiB  0.992         86 KiB (179)
//	384 KiB  0.985        121 KiB (283)
//	512 KiB  0.981        166 KiB (374)
//	1 MiB    0.965        330 KiB (662)
//	2 MiB    0.946        580 KiB (1.2 MiB)
//
// The read target (median ≤ 128 KiB for a 4 KiB file) allows at most
// 384 KiB; 256 KiB keeps the median at two thirds of it with margin for
// less compressible layers, and costs 1% of size against 384 KiB. On the
// numpy layer the median is 35 KiB. Bigger chunks buy size slowly: only
// 2 MiB chunks reach 0.95 of the gzip layer, at 580 KiB per small read.
// The size lost against one zstd stream (0.916) is redundancy between files
// far apart in the tar (translations of the same messages under
// usr/share/locale, copies of licences under usr/share/doc, similar
// binaries), which no chunk small enough for random access can see; a zstd
// dictionary would recover it but plain zstd decoders could then not read
// the layer, which the format requires.
//
// A regular file larger than the chunk size starts a chunk of its own, so a
// small file never shares a chunk with a big neighbour.
//
// DefaultFileChunkSize = 1 MiB. Files larger than this are cut every 1 MiB
// from their start. What a start reads of a large file is scattered: the
// pages of an executable or library that the dynamic linker and the
// program touch, which the kernel's read-ahead widens. Measured with the
// reads a node served to the benchmark images' first starts (bench/coldstart
// workloads; 7.7, 37.1 and 33.1 MB read of python3, numpy and webapp), the
// chunks holding them come to:
//
//	split    python3  numpy    webapp   numpy layer/gzip
//	4 MiB    5.0 MB   26.2 MB  20.2 MB  0.986
//	1 MiB    5.0 MB   21.9 MB  20.2 MB  1.004
//	512 KiB  4.8 MB   20.4 MB  19.8 MB  1.009
//	256 KiB  4.9 MB   20.1 MB  19.6 MB  1.017
//
// 1 MiB takes most of what smaller pieces save of a start's bytes (numpy's
// libraries: python3.11, libcrypto, libopenblas, numpy's and scipy's
// extension modules) for 1.8% of size on numpy; python3's layer is 0.994
// of gzip either way. The bytes of those chunks that a start reads are
// 3.2, 13.0 and 12.5 MB: what is left is small files read whole beside
// neighbours that are not.
//
// Those neighbours are what Split (split.go) takes out. Once an image is
// converted, the registry infers the files its start reads, and cuts the
// chunks (of the layers it converted for that image) that hold data of
// such a file and of another one where the tar passes from one to the
// other. What the benchmark images' first starts fetch went from 5.2,
// 23.2 and 21.0 MB to 4.7, 20.0 and 19.0 MB (python3, numpy, webapp;
// docs/benchmarks.md, "The bytes a start fetches"), for 0.01 to 0.7% more
// layer.
//
// DefaultLevel = 3 (zstd's default; klauspost's SpeedDefault). Measured on
// the python3 tar in 128–512 KiB pieces, level 1 (SpeedFastest) compresses
// about 1.8 times faster but 3% larger, beyond what the 0.95 size target
// allows; the next level (SpeedBetterCompression) saves 1.4% for about
// three times the CPU, beyond the 1.5x-of-floor speed target.
//
// Concurrency defaults to GOMAXPROCS-1 compressors (at least one): one core
// decompresses the source and parses the tar. On 2 cores one compressor
// converts python3 at 67 MB/s of tar per CPU-second against 56 with two
// (which only fight the parser for the second core), and 1.27 times the CPU
// of the gunzip + single-stream zstd floor.
package streaming
