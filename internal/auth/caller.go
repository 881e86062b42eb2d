package auth

import (
	"context"
	"slices"
)

// Requirement is what a request needs of its caller.
type Requirement struct {
	// Public requests need no identity at all.
	Public bool
	// Authenticated requests need credentials or a bearer token (an
	// anonymous token from the token service counts).
	Authenticated bool
	// Accesses must all be granted.
	Accesses []Access
	// Identity asks for the caller's full identity even when it presented a
	// bearer token, for handlers that filter (catalogs).
	Identity bool
}

// Caller is who made a request, as the gate established it.
type Caller struct {
	// Identity of the caller: from basic credentials, anonymous, or (when
	// the requirement asked for it) resolved from a bearer token.
	Identity *Identity
	// Claims of the bearer token, nil for basic credentials.
	Claims *Claims
	// Challenge, set by the gate, is the WWW-Authenticate value that asks
	// a bearer caller's client for a token with scope (the token
	// protocol's challenge, with an error code and, where a body cannot
	// carry it, a description): clients ask the token service for it and
	// try again.
	Challenge func(scope, errCode, description string) string
}

// Can reports whether the caller may do action on repo: by its token's
// claims when it presented one, else by its identity.
func (c *Caller) Can(repo, action string) bool {
	if c == nil {
		return false
	}
	if c.Claims != nil && Covers(c.Claims.Access, Access{Type: TypeRepository, Name: repo, Actions: []string{action}}) {
		return true
	}
	return c.Identity.Allowed(repo, action)
}

// MayRead reports whether the caller may read repo's content or metadata:
// the test catalogs apply to decide what to list.
func (c *Caller) MayRead(repo string) bool {
	return c.Can(repo, ActionPull) || c.Can(repo, ActionMetadataRead)
}

// Unrestricted is the caller when authentication is turned off.
var Unrestricted = &Caller{Identity: &Identity{Kind: AdminUser, Name: "unrestricted"}}

type callerKey struct{}

// WithCaller returns ctx carrying the caller.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller of a request, Unrestricted when the gate
// did not run (authentication off).
func CallerFrom(ctx context.Context) *Caller {
	if c, ok := ctx.Value(callerKey{}).(*Caller); ok {
		return c
	}
	return Unrestricted
}

// satisfied reports whether granted accesses (from a token, or computed from
// an identity) satisfy every required access.
func satisfied(granted []Access, required []Access) bool {
	for _, r := range required {
		if !Covers(granted, r) {
			return false
		}
	}
	return true
}

// Check reports whether the caller satisfies the requirement's accesses.
func (c *Caller) Check(req Requirement) bool {
	if c.Claims != nil {
		return satisfied(c.Claims.Access, req.Accesses)
	}
	return satisfied(c.Identity.Grant(req.Accesses), req.Accesses)
}

// Repo is shorthand for a repository access.
func Repo(name string, actions ...string) Access {
	return Access{Type: TypeRepository, Name: name, Actions: slices.Clone(actions)}
}

// Registry is shorthand for a registry-wide access.
func Registry(name string) Access {
	return Access{Type: TypeRegistry, Name: name, Actions: []string{ActionAll}}
}
