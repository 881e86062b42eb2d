package streaming

// DefaultMemoryBudget is the heap one conversion may hold by default.
const DefaultMemoryBudget = 256 << 20

// What a conversion holds, part by part, at most. The sum for the options
// and the source's compression is what Options.MemoryBudget is measured
// against; the hostile-layer tests check it against the heap measured.
const (
	// zstdSourceWindow is the largest window a zstd source may use (zstd
	// --long=27, --ultra -22), if the budget holds it: the decoder
	// allocates it. Every zstd decoder supports 8 MiB, what zstd's levels
	// 1 to 19 use at most.
	zstdSourceWindow    = 1 << 27
	zstdSourceWindowMin = 8 << 20
	// tocMemory covers the TOC's encoder, its spill buffer before it
	// moves to a file, and one entry's JSON.
	tocMemory = 12<<20 + tocSpillMemory
	// scanMemory covers the capture of one entry's headers, archive/tar's
	// PAX records (1 MiB at most) and the read buffers.
	scanMemory = maxHeaderBytes + 2<<20
	// encoderMemory is one chunk compressor's zstd state.
	encoderMemory = 8 << 20
	// chunkRecordBytes is the in-memory size of one chunk table row.
	chunkRecordBytes = 64
	// placeBytesPerName is what the unpack check holds per name of the
	// layer's tree (a hashed map slot, with the map's growth), measured by
	// BenchmarkPlace; the symbolic link targets it keeps come on top (a
	// sixteenth of the budget).
	placeBytesPerName = 48
)

// memoryPlan is how a conversion spends its budget.
type memoryPlan struct {
	window        int64 // the largest window a zstd source may use
	fixed         int64 // source decoder, TOC, scan buffers, chunk table
	perCompressor int64 // the chunks in flight and the state of one compressor
	compressors   int
}

// planMemory fits the compressors into the budget next to what the
// conversion needs whatever its concurrency. At least one compressor
// runs, so a budget below the fixed needs is exceeded rather than refused.
func planMemory(o Options, comp Compression) memoryPlan {
	var p memoryPlan
	p.fixed = tocMemory + scanMemory
	p.fixed += int64(maxTreeNodes(o.Limits))*placeBytesPerName + linkBytes(o.MemoryBudget)
	// Chunks end on entry boundaries once they hold ChunkSize bytes, and
	// a big file starts its own: at most two chunks per ChunkSize of tar,
	// and the table grows by a quarter at a time once large.
	p.fixed += 5 * o.Limits.MaxUncompressedSize / o.ChunkSize * chunkRecordBytes / 2
	// A chunk holds at most a file piece, a chunk's worth of small
	// entries and one entry's headers; each in flight has its data and
	// its frame. The chunk writer keeps two chunks per compressor queued,
	// plus the one being filled and the one being written.
	chunk := min(o.hardMax(), o.FileChunkSize+o.ChunkSize+maxHeaderBytes)
	p.fixed += 2 * 2 * chunk
	p.perCompressor = 2*2*chunk + encoderMemory
	// A zstd source's window gets what one compressor leaves, in powers
	// of two: a layer that needs more is refused (LimitConversionMemory).
	p.window = zstdSourceWindow
	for p.window > zstdSourceWindowMin && p.fixed+p.perCompressor+p.window > o.MemoryBudget {
		p.window /= 2
	}
	if comp == CompressionZstd {
		p.fixed += p.window
	}
	p.compressors = max(1, min(o.Concurrency, int((o.MemoryBudget-p.fixed)/p.perCompressor)))
	return p
}

// total is the heap the plan expects at most.
func (p memoryPlan) total() int64 { return p.fixed + int64(p.compressors)*p.perCompressor }

func (o Options) hardMax() int64 {
	return min(o.Limits.MaxChunkSize, 4*(o.ChunkSize+o.FileChunkSize))
}
