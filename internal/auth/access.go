// Package auth decides who may do what: identities (the admin user, tokens
// with two passwords each, anonymous callers), scope maps, the Docker
// registry token protocol's scopes, and the short-lived signed JWTs the
// token service issues and every request presents.
package auth

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/internal/oci"
)

// Actions on a repository, as they appear in token scopes.
const (
	ActionPull          = "pull"
	ActionPush          = "push"
	ActionDelete        = "delete"
	ActionMetadataRead  = "metadata_read"
	ActionMetadataWrite = "metadata_write"
	// ActionStreamingWrite pushes streaming artifacts and their
	// signatures: what nodes mount instead of an image's layers, so only
	// the conversion service and identities trusted with it may.
	ActionStreamingWrite = "streaming_write"
	ActionAll            = "*"
)

// repositoryActions are every action on a repository, in a stable order.
var repositoryActions = []string{ActionPull, ActionPush, ActionDelete, ActionMetadataRead, ActionMetadataWrite, ActionStreamingWrite}

// Resource types and the registry-wide resources.
const (
	TypeRepository = "repository"
	TypeRegistry   = "registry"
	// Catalog: listing repositories (filtered to those the caller may read).
	Catalog = "catalog"
	// Admin: tokens, scope maps, usage, metrics.
	Admin = "admin"
)

// actionRE is what an action may look like: pull, metadata_read, *.
var actionRE = regexp.MustCompile(`^([a-z][a-z_]*|\*)$`)

// ErrScopeInvalid is returned for a scope that cannot be parsed.
var ErrScopeInvalid = errors.New("invalid scope")

// Access is one resource and the actions on it, the unit of a token scope
// ("repository:team/app:pull,push") and of a JWT's access claim.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// String renders the access as a scope.
func (a Access) String() string {
	return a.Type + ":" + a.Name + ":" + strings.Join(a.Actions, ",")
}

// ScopeString renders accesses as a token request's or a challenge's
// scope: each access as String does, separated by spaces.
func ScopeString(accesses []Access) string {
	parts := make([]string, len(accesses))
	for i, a := range accesses {
		parts[i] = a.String()
	}
	return strings.Join(parts, " ")
}

// ParseScope reads one scope: type:name:actions, where the name may itself
// contain colons only for a registry host prefix (rare) and the actions are
// comma-separated.
func ParseScope(s string) (Access, error) {
	first := strings.IndexByte(s, ':')
	last := strings.LastIndexByte(s, ':')
	if first <= 0 || last == first {
		return Access{}, fmt.Errorf("%w %q: want type:name:actions", ErrScopeInvalid, s)
	}
	a := Access{Type: s[:first], Name: s[first+1 : last]}
	if i := strings.IndexByte(a.Type, '('); i > 0 && strings.HasSuffix(a.Type, ")") {
		a.Type = a.Type[:i] // "repository(plugin)" is a repository
	}
	switch a.Type {
	case TypeRepository:
		if err := oci.ValidateName(a.Name); err != nil {
			return Access{}, fmt.Errorf("%w %q: %v", ErrScopeInvalid, s, err)
		}
	case TypeRegistry:
		if a.Name == "" {
			return Access{}, fmt.Errorf("%w %q: empty name", ErrScopeInvalid, s)
		}
	default:
		return Access{}, fmt.Errorf("%w %q: unknown resource type %q", ErrScopeInvalid, s, a.Type)
	}
	for _, act := range strings.Split(s[last+1:], ",") {
		if act == "" {
			continue
		}
		if !actionRE.MatchString(act) {
			return Access{}, fmt.Errorf("%w %q: action %q is not a word like pull or push", ErrScopeInvalid, s, act)
		}
		if !slices.Contains(a.Actions, act) {
			a.Actions = append(a.Actions, act)
		}
	}
	if len(a.Actions) == 0 {
		return Access{}, fmt.Errorf("%w %q: no actions", ErrScopeInvalid, s)
	}
	return a, nil
}

// ParseScopes reads the scope parameters of a token request; each value may
// hold several space-separated scopes (the OAuth2 form).
func ParseScopes(values []string) ([]Access, error) {
	var out []Access
	for _, v := range values {
		for _, s := range strings.Fields(v) {
			a, err := ParseScope(s)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return merge(out), nil
}

// merge joins accesses to the same resource and sorts everything, so that
// equal grants compare equal.
func merge(in []Access) []Access {
	byKey := map[string]*Access{}
	var keys []string
	for _, a := range in {
		k := a.Type + ":" + a.Name
		m := byKey[k]
		if m == nil {
			m = &Access{Type: a.Type, Name: a.Name}
			byKey[k] = m
			keys = append(keys, k)
		}
		for _, act := range a.Actions {
			if !slices.Contains(m.Actions, act) {
				m.Actions = append(m.Actions, act)
			}
		}
	}
	sort.Strings(keys)
	out := make([]Access, 0, len(keys))
	for _, k := range keys {
		a := byKey[k]
		sort.Strings(a.Actions)
		out = append(out, *a)
	}
	return out
}

// Covers reports whether granted accesses allow every action of want.
func Covers(granted []Access, want Access) bool {
	for _, act := range want.Actions {
		ok := false
		for _, g := range granted {
			if g.Type == want.Type && g.Name == want.Name && (slices.Contains(g.Actions, act) || slices.Contains(g.Actions, ActionAll)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
