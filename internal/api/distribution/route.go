package dist

import "strings"

// routeKind names the endpoints of the distribution API; it is also the
// route label of the request metrics.
type routeKind string

const (
	routeBase      routeKind = "base"
	routeCatalog   routeKind = "catalog"
	routeTags      routeKind = "tags"
	routeManifest  routeKind = "manifest"
	routeBlob      routeKind = "blob"
	routeUploads   routeKind = "uploads"
	routeUpload    routeKind = "upload"
	routeReferrers routeKind = "referrers"
	routeUnknown   routeKind = "unknown"
)

// route is a parsed /v2/ path: which endpoint, the repository name and the
// last path element (reference, digest or upload id).
type route struct {
	kind routeKind
	name string
	arg  string
}

// parseRoute matches a path below /v2/ from its end, because repository
// names may contain slashes and even the words the endpoints use.
func parseRoute(p string) route {
	switch p {
	case "":
		return route{kind: routeBase}
	case "_catalog":
		return route{kind: routeCatalog}
	}
	seg := strings.Split(p, "/")
	n := len(seg)
	name := func(k int) string { return strings.Join(seg[:n-k], "/") }
	at := func(i int) string {
		if i < 0 || i >= n {
			return ""
		}
		return seg[i]
	}
	switch {
	case n >= 3 && at(n-2) == "tags" && at(n-1) == "list":
		return route{kind: routeTags, name: name(2)}
	case n >= 4 && at(n-3) == "blobs" && at(n-2) == "uploads" && at(n-1) == "":
		return route{kind: routeUploads, name: name(3)}
	case n >= 3 && at(n-2) == "blobs" && at(n-1) == "uploads":
		return route{kind: routeUploads, name: name(2)}
	case n >= 4 && at(n-3) == "blobs" && at(n-2) == "uploads":
		return route{kind: routeUpload, name: name(3), arg: at(n - 1)}
	case n >= 3 && at(n-2) == "blobs":
		return route{kind: routeBlob, name: name(2), arg: at(n - 1)}
	case n >= 3 && at(n-2) == "manifests":
		return route{kind: routeManifest, name: name(2), arg: at(n - 1)}
	case n >= 3 && at(n-2) == "referrers":
		return route{kind: routeReferrers, name: name(2), arg: at(n - 1)}
	}
	return route{kind: routeUnknown}
}
