package mgmt

import (
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
)

// Requirement says what a management request needs of its caller: reading
// metadata (metadata_read), changing attributes and streaming settings
// (metadata_write), deleting (delete), restoring (push), and for the
// registry-wide endpoints, being the admin. Startup profiles need pull
// (delete to remove one).
func Requirement(r *http.Request) auth.Requirement {
	if p, ok := strings.CutPrefix(r.URL.Path, "/mount/v1/"); ok {
		rt := parseRoute(p)
		if oci.ValidateName(rt.repo) != nil {
			return auth.Requirement{Authenticated: true}
		}
		return need(rt.repo, auth.ActionPull)
	}
	rt := parseRoute(strings.TrimPrefix(r.URL.Path, "/acr/v1/"))
	if rt.repo == "" {
		switch rt.action {
		case "_catalog":
			return auth.Requirement{Accesses: []auth.Access{auth.Registry(auth.Catalog)}, Identity: true}
		case "_deleted":
			return deletedRequirement(r, rt)
		case "_import", "_operations":
			// The handler checks push on the import's targets.
			return auth.Requirement{Authenticated: true, Identity: true}
		case "_keys":
			// Public keys: nodes fetch them before they hold any
			// credential for the registry.
			return auth.Requirement{Public: true}
		}
		return auth.Requirement{Accesses: []auth.Access{auth.Registry(auth.Admin)}}
	}
	if oci.ValidateName(rt.repo) != nil {
		return auth.Requirement{Authenticated: true}
	}
	read, write := r.Method == "GET" || r.Method == "HEAD", r.Method != "DELETE"
	if rt.action == "_profiles" && r.Method != "DELETE" {
		// Nodes hold pull-only tokens: reading and giving a startup
		// profile needs pull, nothing more.
		return need(rt.repo, auth.ActionPull)
	}
	switch {
	case read:
		return need(rt.repo, auth.ActionMetadataRead)
	case write:
		return need(rt.repo, auth.ActionMetadataWrite)
	}
	return need(rt.repo, auth.ActionDelete)
}

func deletedRequirement(r *http.Request, rt route) auth.Requirement {
	if rt.arg == "_catalog" {
		return auth.Requirement{Accesses: []auth.Access{auth.Registry(auth.Admin)}}
	}
	sub := parseRoute(rt.arg)
	if oci.ValidateName(sub.repo) != nil {
		return auth.Requirement{Authenticated: true}
	}
	if r.Method == "POST" {
		return need(sub.repo, auth.ActionPush)
	}
	return need(sub.repo, auth.ActionMetadataRead)
}

func need(repo string, action string) auth.Requirement {
	return auth.Requirement{Accesses: []auth.Access{auth.Repo(repo, action)}}
}
