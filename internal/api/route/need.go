package route

import (
	"net/http"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
)

// Repo needs the actions on the repository named by the parameter param.
// An invalid name needs only credentials: nothing can be reached through
// it, and the handler answers NAME_INVALID.
func Repo(param string, actions ...string) Need {
	return func(_ *http.Request, p Params) auth.Requirement {
		if oci.ValidateName(p[param]) != nil {
			return auth.Requirement{Authenticated: true}
		}
		return auth.Requirement{Accesses: []auth.Access{auth.Repo(p[param], actions...)}}
	}
}

// Registry needs access to a registry-wide resource: auth.Catalog (the
// handler filters what it lists, so it gets the caller's identity) or
// auth.Admin.
func Registry(resource string) Need {
	return func(*http.Request, Params) auth.Requirement {
		return auth.Requirement{Accesses: []auth.Access{auth.Registry(resource)}, Identity: resource == auth.Catalog}
	}
}

// Authenticated needs credentials or a token, and the caller's identity:
// the handler decides what it may do (an import checks its targets).
func Authenticated(*http.Request, Params) auth.Requirement {
	return auth.Requirement{Authenticated: true, Identity: true}
}
