package snapshotter

// Why a layer was not streamed but downloaded by containerd: the one set
// of reasons that the fallback metric (sluice_snapshotter_fallbacks_total
// {reason}) and the snapshotter's log use.
const (
	// ReasonNoLabels: the pull did not label the layer with its image.
	ReasonNoLabels = "no_labels"
	// ReasonBadReference: the labels name what does not parse.
	ReasonBadReference = "bad_reference"
	// ReasonNoArtifact: the image has no streaming artifact this node reads.
	ReasonNoArtifact = "no_artifact"
	// ReasonUnauthorized: the registry refused the node's credentials for
	// the repository, or the node had none.
	ReasonUnauthorized = "unauthorized"
	// ReasonRegistry: the registry was unreachable or answered an error.
	ReasonRegistry = "registry"
	// ReasonBadArtifact: the streaming artifact does not fit the image, or
	// its TOC does not verify or does not describe its blob.
	ReasonBadArtifact = "bad_artifact"
	// ReasonOverLimit: the layer's TOC is over one of the node's limits
	// (limits.maxTOCBytes, maxTOCJSONBytes, maxEntries).
	ReasonOverLimit = "over_limit"
	// ReasonUntrusted: no key the node trusts signed the artifact.
	ReasonUntrusted = "untrusted"
	// ReasonMount: the FUSE manager could not mount the layer.
	ReasonMount = "mount"
	// ReasonBadLayer: the layer was found bad before.
	ReasonBadLayer = "bad_layer"
	// ReasonError: anything else.
	ReasonError = "error"
)

// FallbackReasons lists every reason, in the order the docs give them.
var FallbackReasons = []string{ReasonNoLabels, ReasonBadReference, ReasonNoArtifact, ReasonUnauthorized, ReasonRegistry,
	ReasonBadArtifact, ReasonOverLimit, ReasonUntrusted, ReasonMount, ReasonBadLayer, ReasonError}
