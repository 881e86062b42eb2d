package wire

import (
	"errors"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/api/route"
	"github.com/sluicehq/sluice/internal/auth"
)

// Refusal answers the errors every API answers alike, and reports whether
// err was one: a caller refused an access (auth.DeniedError), a method the
// route table does not have for the path (route.MethodError).
//
// A refused caller is told who may not do what: a bearer caller with 401
// insufficient_scope, as the token protocol wants, so that its client asks
// for a token with the scope (which the identity may hold) and tries
// again; a basic-auth caller, who has nothing to ask for, with 403 DENIED.
// Both bodies list the missing accesses in their detail.
func Refusal(w http.ResponseWriter, r *http.Request, err error) bool {
	var denied *auth.DeniedError
	var me *route.MethodError
	switch {
	case errors.As(err, &denied):
		message := denied.Error()
		if denied.Caller.Claims == nil || denied.Caller.Challenge == nil {
			Errors(w, http.StatusForbidden, "DENIED", message, denied.Missing)
			return true
		}
		w.Header().Set("WWW-Authenticate", denied.Caller.Challenge(denied.ChallengeScope(), "insufficient_scope", message))
		Errors(w, http.StatusUnauthorized, "UNAUTHORIZED", message, denied.Missing)
		return true
	case errors.As(err, &me):
		w.Header().Set("Allow", strings.Join(me.Allow, ", "))
		Errors(w, http.StatusMethodNotAllowed, "UNSUPPORTED", me.Error(), nil)
		return true
	}
	return false
}
