package auth

import "slices"

// Kind says what sort of caller an identity is.
type Kind int

// Identity kinds.
const (
	Anonymous Kind = iota
	AdminUser
	TokenUser
)

// Identity is an authenticated (or anonymous) caller and what it may do.
type Identity struct {
	Kind Kind
	Name string
	// grants of a token (from its scope map) or of anonymous callers.
	grants []grant
	// password is the name of the token password used and its creation
	// time (Unix nanoseconds), stamped into the tokens issued to it.
	password        string
	passwordCreated int64
}

// IsAdmin reports whether the identity is the admin user.
func (id *Identity) IsAdmin() bool { return id != nil && id.Kind == AdminUser }

// Allowed reports whether the identity may do action on repository repo.
func (id *Identity) Allowed(repo, action string) bool {
	if id == nil {
		return false
	}
	if id.Kind == AdminUser {
		return true
	}
	for _, g := range id.grants {
		if g.action == action && g.matches(repo) {
			return true
		}
	}
	return false
}

// Grant returns the part of the requested accesses the identity is
// allowed: the intersection of asked and allowed, never an error.
func (id *Identity) Grant(requested []Access) []Access {
	var out []Access
	for _, a := range requested {
		g := Access{Type: a.Type, Name: a.Name}
		for _, act := range a.Actions {
			for _, allowed := range id.actionsFor(a, act) {
				if !slices.Contains(g.Actions, allowed) {
					g.Actions = append(g.Actions, allowed)
				}
			}
		}
		if len(g.Actions) > 0 {
			out = append(out, g)
		}
	}
	return merge(out)
}

// actionsFor expands one requested action into the actions granted for it:
// "*" asks for everything the identity may do.
func (id *Identity) actionsFor(a Access, act string) []string {
	switch a.Type {
	case TypeRegistry:
		switch {
		case a.Name == Catalog && (id.Kind != Anonymous || len(id.grants) > 0):
			return []string{ActionAll}
		case a.Name == Admin && id.IsAdmin():
			return []string{ActionAll}
		}
		return nil
	case TypeRepository:
		candidates := []string{act}
		if act == ActionAll {
			candidates = repositoryActions
		}
		var out []string
		for _, c := range candidates {
			if id.Allowed(a.Name, c) {
				out = append(out, c)
			}
		}
		return out
	}
	return nil
}
