package dist

import (
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
)

// Requirement says what a /v2/ request needs of its caller: pull to read,
// push to write (and pull on a mount's source), delete to delete.
func Requirement(r *http.Request) auth.Requirement {
	p, _ := strings.CutPrefix(r.URL.Path, "/v2/")
	rt := parseRoute(p)
	if rt.name != "" && oci.ValidateName(rt.name) != nil {
		// Let the handler answer NAME_INVALID; nothing is reachable.
		return auth.Requirement{Authenticated: true}
	}
	switch rt.kind {
	case routeCatalog:
		return auth.Requirement{Accesses: []auth.Access{auth.Registry(auth.Catalog)}, Identity: true}
	case routeTags, routeReferrers:
		return repo(rt.name, auth.ActionPull)
	case routeManifest, routeBlob:
		switch r.Method {
		case "GET", "HEAD":
			return repo(rt.name, auth.ActionPull)
		case "DELETE":
			return repo(rt.name, auth.ActionDelete)
		}
		return repo(rt.name, auth.ActionPush)
	case routeUpload:
		return repo(rt.name, auth.ActionPush)
	case routeUploads:
		req := repo(rt.name, auth.ActionPush)
		q := r.URL.Query()
		if q.Get("mount") != "" {
			if from := q.Get("from"); from != "" && oci.ValidateName(from) == nil {
				req.Accesses = append(req.Accesses, auth.Repo(from, auth.ActionPull))
			} else {
				// A mount without a source looks through the
				// repositories the caller may read.
				req.Identity = true
			}
		}
		return req
	}
	return auth.Requirement{Authenticated: true}
}

func repo(name string, actions ...string) auth.Requirement {
	return auth.Requirement{Accesses: []auth.Access{auth.Repo(name, actions...)}}
}
