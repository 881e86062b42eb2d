package route

import (
	"net/http"

	"github.com/sluicehq/sluice/internal/auth"
)

// Repo needs the actions on the repository named by the parameter param,
// the API's Repository: the table has checked it is a repository name
// before any Need is asked (Matched.Requirement).
func Repo(param string, actions ...string) Need {
	return func(_ *http.Request, p Params) auth.Requirement {
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
