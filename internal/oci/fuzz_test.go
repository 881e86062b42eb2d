package oci

import (
	"errors"
	"strings"
	"testing"
)

// The parsers below read untrusted input: they must never panic, and must
// fail only with their sentinel errors.

func FuzzParseManifest(f *testing.F) {
	f.Add(MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":`+cfgDesc+`,"layers":[`+layerDesc+`]}`))
	f.Add(MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[`+layerDesc+`],"subject":`+cfgDesc+`}`))
	f.Add("", []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeDockerManifest+`","config":`+cfgDesc+`}`))
	f.Add("text/plain", []byte(`[]`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, err := ParseManifest(ct, body)
		if err != nil {
			if !errors.Is(err, ErrManifestInvalid) && !errors.Is(err, ErrManifestTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if !IsManifestMediaType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		for _, d := range append(m.RequiredBlobs(), m.Manifests...) {
			if err := ValidateDescriptor(d); err != nil {
				t.Fatalf("accepted invalid descriptor: %v", err)
			}
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"latest", "sha256:" + hex64, "sha512:abc", "", "a:b", "-x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrTagInvalid) && !errors.Is(err, ErrDigestInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if ref.IsDigest() == (ref.Tag != "") || ref.String() != s {
			t.Fatalf("inconsistent reference %+v for %q", ref, s)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a/b", "library/ubuntu", "A", "a//b", "a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateName(s); err != nil {
			if !errors.Is(err, ErrNameInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, bad := range []string{"..", "//", " "} {
			if strings.Contains(s, bad) {
				t.Fatalf("accepted name %q containing %q", s, bad)
			}
		}
		if s == "" || s[0] == '/' || s[len(s)-1] == '/' {
			t.Fatalf("accepted name %q", s)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-0", "5-9", "bytes 1-2/3", "9-1", "-", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, length, err := ParseContentRange(s)
		if err != nil {
			if !errors.Is(err, ErrRangeInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if start < 0 || length < 1 {
			t.Fatalf("accepted %q as start %d length %d", s, start, length)
		}
	})
}
