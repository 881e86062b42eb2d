package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/internal/oci"
)

// ErrActionInvalid is returned for a scope map action that cannot be parsed.
var ErrActionInvalid = errors.New("invalid scope map action")

// Scope map action verbs, "repositories/<pattern>/<verb>", mapped to the
// token actions they allow.
var verbs = map[string]string{
	"content/read":   ActionPull,
	"content/write":  ActionPush,
	"content/delete": ActionDelete,
	"metadata/read":  ActionMetadataRead,
	"metadata/write": ActionMetadataWrite,
	// Not in any built-in map but _repositories_admin: pushing content
	// does not let an identity say what nodes mount for an image.
	"streaming/write": ActionStreamingWrite,
}

// BuiltinScopeMaps are the scope maps every registry has.
var BuiltinScopeMaps = map[string][]string{
	"_repositories_pull":                {"repositories/*/content/read"},
	"_repositories_pull_metadata_read":  {"repositories/*/content/read", "repositories/*/metadata/read"},
	"_repositories_push":                {"repositories/*/content/read", "repositories/*/content/write"},
	"_repositories_push_metadata_write": {"repositories/*/content/read", "repositories/*/content/write", "repositories/*/metadata/read", "repositories/*/metadata/write"},
	"_repositories_admin": {"repositories/*/content/read", "repositories/*/content/write", "repositories/*/content/delete",
		"repositories/*/metadata/read", "repositories/*/metadata/write", "repositories/*/streaming/write"},
}

// grant is one parsed scope map action: a repository pattern and the token
// action it allows.
type grant struct {
	pattern string
	action  string
}

// matches reports whether the pattern covers repo: "*" covers every
// repository, "team-a/*" (any pattern ending in *) those starting with what
// precedes the star, anything else exactly one repository.
func (g grant) matches(repo string) bool {
	if prefix, ok := strings.CutSuffix(g.pattern, "*"); ok {
		return strings.HasPrefix(repo, prefix)
	}
	return g.pattern == repo
}

// ParseAction reads a scope map action such as
// "repositories/team-a/*/content/read".
func ParseAction(s string) (pattern, action string, err error) {
	rest, ok := strings.CutPrefix(s, "repositories/")
	if !ok {
		return "", "", fmt.Errorf("%w %q: must start with repositories/", ErrActionInvalid, s)
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", "", fmt.Errorf("%w %q: want repositories/<repository or pattern>/<content|metadata|streaming>/<read|write|delete>", ErrActionInvalid, s)
	}
	j := strings.LastIndexByte(rest[:i], '/')
	if j <= 0 {
		return "", "", fmt.Errorf("%w %q: want repositories/<repository or pattern>/<content|metadata|streaming>/<read|write|delete>", ErrActionInvalid, s)
	}
	pattern, verb := rest[:j], rest[j+1:]
	action, ok = verbs[verb]
	if !ok {
		return "", "", fmt.Errorf("%w %q: %q is not one of content/read, content/write, content/delete, metadata/read, metadata/write, streaming/write", ErrActionInvalid, s, verb)
	}
	if err := validatePattern(pattern); err != nil {
		return "", "", fmt.Errorf("%w %q: %v", ErrActionInvalid, s, err)
	}
	return pattern, action, nil
}

// validatePattern accepts a repository name, optionally ending in * (which
// may stand alone).
func validatePattern(p string) error {
	base, wild := strings.CutSuffix(p, "*")
	if strings.Contains(base, "*") {
		return errors.New("* may appear only at the end")
	}
	if base == "" {
		if wild {
			return nil
		}
		return errors.New("empty repository")
	}
	if wild {
		// "team-a/" or "team-a/app" followed by a star: the part before
		// the star must be a valid name once a trailing separator is
		// dropped.
		base = strings.TrimRight(base, "/._-")
		if base == "" {
			return errors.New("pattern has no repository part")
		}
	}
	return oci.ValidateName(base)
}

// parseGrants turns scope map actions into grants.
func parseGrants(actions []string) ([]grant, error) {
	out := make([]grant, 0, len(actions))
	for _, a := range actions {
		p, act, err := ParseAction(a)
		if err != nil {
			return nil, err
		}
		out = append(out, grant{pattern: p, action: act})
	}
	return out, nil
}
