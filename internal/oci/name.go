package oci

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var (
	// ErrNameInvalid is returned for a repository name outside the grammar
	// of the distribution spec.
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrTagInvalid is returned for a tag outside the grammar of the
	// distribution spec.
	ErrTagInvalid = errors.New("invalid tag")
)

// MaxNameLength bounds a repository name; with a registry host in front it
// stays within the 255 characters that clients accept for a reference.
const MaxNameLength = 255

var (
	nameComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	nameRE        = regexp.MustCompile(`^` + nameComponent + `(?:/` + nameComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name against the distribution spec's
// grammar: lower-case components separated by slashes.
func ValidateName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrNameInvalid, len(name), MaxNameLength)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use lower-case letters, digits and separators (. _ __ -) in components joined by /", ErrNameInvalid, name)
	}
	return nil
}

// ValidateTag checks a tag against the distribution spec's grammar.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("%w %q: up to 128 characters of letters, digits, _ . -, not starting with . or -", ErrTagInvalid, tag)
	}
	return nil
}

// Reference is what follows /manifests/ in a URL: a tag or a digest.
type Reference struct {
	Tag    string
	Digest string
}

// IsDigest reports whether the reference names content by digest.
func (r Reference) IsDigest() bool { return r.Digest != "" }

func (r Reference) String() string {
	if r.IsDigest() {
		return r.Digest
	}
	return r.Tag
}

// ParseReference reads a manifest reference. Anything with a colon must be a
// digest; everything else must be a tag.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{Digest: d.String()}, nil
	}
	if err := ValidateTag(s); err != nil {
		return Reference{}, err
	}
	return Reference{Tag: s}, nil
}
