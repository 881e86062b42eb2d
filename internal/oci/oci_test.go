package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"library/ubuntu", true},
		{"a.b_c__d-e---f/g", true},
		{"team/blobs/manifests", true},
		{"0/1/2", true},
		{"", false},
		{"A", false},
		{"a/", false},
		{"/a", false},
		{"a//b", false},
		{"a___b", false},
		{"a-", false},
		{"-a", false},
		{"a..b", false},
		{"a/../b", false},
		{"a b", false},
		{strings.Repeat("a", MaxNameLength), true},
		{strings.Repeat("a", MaxNameLength+1), false},
	}
	for _, tc := range tests {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("ValidateName(%q) error %v is not ErrNameInvalid", tc.name, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	sha := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		in      string
		tag     string
		digest  string
		wantErr error
	}{
		{"latest", "latest", "", nil},
		{"_x.Y-1", "_x.Y-1", "", nil},
		{strings.Repeat("t", 128), strings.Repeat("t", 128), "", nil},
		{strings.Repeat("t", 129), "", "", ErrTagInvalid},
		{".hidden", "", "", ErrTagInvalid},
		{"-dash", "", "", ErrTagInvalid},
		{"", "", "", ErrTagInvalid},
		{sha, "", sha, nil},
		{"sha512:" + strings.Repeat("b", 128), "", "sha512:" + strings.Repeat("b", 128), nil},
		{"sha256:" + strings.Repeat("A", 64), "", "", ErrDigestInvalid},
		{"sha256:abc", "", "", ErrDigestInvalid},
		{"sha384:" + strings.Repeat("a", 96), "", "", ErrDigestInvalid},
		{"md5:" + strings.Repeat("a", 32), "", "", ErrDigestInvalid},
		{"tag:with:colons", "", "", ErrDigestInvalid},
	}
	for _, tc := range tests {
		ref, err := ParseReference(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ParseReference(%q) error %v, want %v", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || ref.Tag != tc.tag || ref.Digest != tc.digest {
			t.Errorf("ParseReference(%q) = %+v, %v", tc.in, ref, err)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in            string
		start, length int64
		ok            bool
	}{
		{"0-0", 0, 1, true},
		{"0-99", 0, 100, true},
		{"100-199", 100, 100, true},
		{"bytes 5-9/20", 5, 5, true},
		{"bytes=5-9", 5, 5, true},
		{"bytes 5-9/*", 5, 5, true},
		{"9-5", 0, 0, false},
		{"-5", 0, 0, false},
		{"5-", 0, 0, false},
		{"a-b", 0, 0, false},
		{"", 0, 0, false},
		{"5", 0, 0, false},
		{"-1-5", 0, 0, false},
		{"99999999999999999999-1", 0, 0, false},
	}
	for _, tc := range tests {
		start, length, err := ParseContentRange(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (start != tc.start || length != tc.length)) {
			t.Errorf("ParseContentRange(%q) = %d, %d, %v", tc.in, start, length, err)
		}
	}
}

const (
	cfgDesc   = `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + hex64 + `","size":10}`
	layerDesc = `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + hex64 + `","size":20}`
	hex64     = "1111111111111111111111111111111111111111111111111111111111111111"
)

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name, ct, body string
		wantType       string
		wantArtifact   string
		wantBlobs      int
		wantErr        error
	}{
		{name: "oci image", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":` + cfgDesc + `,"layers":[` + layerDesc + `]}`,
			wantType: MediaTypeImageManifest, wantArtifact: MediaTypeImageConfig, wantBlobs: 2},
		{name: "oci image without mediaType field", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `,"layers":[]}`, wantType: MediaTypeImageManifest, wantBlobs: 1, wantArtifact: MediaTypeImageConfig},
		{name: "content type with parameters", ct: MediaTypeImageManifest + "; charset=utf-8", body: `{"schemaVersion":2,"config":` + cfgDesc + `}`, wantType: MediaTypeImageManifest, wantBlobs: 1, wantArtifact: MediaTypeImageConfig},
		{name: "no content type, guessed", body: `{"schemaVersion":2,"manifests":[]}`, wantType: MediaTypeImageIndex},
		{name: "artifact", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"artifactType":"application/x","config":` + cfgDesc + `,"layers":[` + layerDesc + `]}`, wantType: MediaTypeImageManifest, wantArtifact: "application/x", wantBlobs: 2},
		{name: "foreign layer is not required", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `,"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"sha256:` + hex64 + `","size":1,"urls":["https://x"]}]}`, wantType: MediaTypeImageManifest, wantBlobs: 1, wantArtifact: MediaTypeImageConfig},
		{name: "index", ct: MediaTypeImageIndex, body: `{"schemaVersion":2,"manifests":[{"mediaType":"` + MediaTypeImageManifest + `","digest":"sha256:` + hex64 + `","size":5}]}`, wantType: MediaTypeImageIndex},
		{name: "docker manifest", ct: MediaTypeDockerManifest, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":` + cfgDesc + `,"layers":[` + layerDesc + `]}`, wantType: MediaTypeDockerManifest, wantBlobs: 2, wantArtifact: MediaTypeImageConfig},
		{name: "docker list", ct: MediaTypeDockerManifestList, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifestList + `","manifests":[]}`, wantType: MediaTypeDockerManifestList},
		{name: "docker without field", ct: MediaTypeDockerManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `}`, wantErr: ErrManifestInvalid},
		{name: "type mismatch", ct: MediaTypeImageIndex, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":` + cfgDesc + `}`, wantErr: ErrManifestInvalid},
		{name: "unknown type", ct: "application/json", body: `{"schemaVersion":2,"config":` + cfgDesc + `}`, wantErr: ErrManifestInvalid},
		{name: "schema 1", ct: MediaTypeDockerSchema1Signed, body: `{"schemaVersion":1}`, wantErr: ErrManifestInvalid},
		{name: "schema 1 by shape", body: `{"schemaVersion":2,"fsLayers":[]}`, wantErr: ErrManifestInvalid},
		{name: "schema version 3", ct: MediaTypeImageManifest, body: `{"schemaVersion":3,"config":` + cfgDesc + `}`, wantErr: ErrManifestInvalid},
		{name: "no schema version", ct: MediaTypeImageManifest, body: `{"config":` + cfgDesc + `}`, wantErr: ErrManifestInvalid},
		{name: "not json", ct: MediaTypeImageManifest, body: `{`, wantErr: ErrManifestInvalid},
		{name: "json array", ct: MediaTypeImageManifest, body: `[]`, wantErr: ErrManifestInvalid},
		{name: "trailing data", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `} {}`, wantErr: ErrManifestInvalid},
		{name: "image without config", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"layers":[]}`, wantErr: ErrManifestInvalid},
		{name: "image with manifests", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `,"manifests":[]}`, wantErr: ErrManifestInvalid},
		{name: "index with layers", ct: MediaTypeImageIndex, body: `{"schemaVersion":2,"manifests":[],"layers":[]}`, wantErr: ErrManifestInvalid},
		{name: "bad layer digest", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `,"layers":[{"mediaType":"a/b","digest":"sha256:zz","size":1}]}`, wantErr: ErrManifestInvalid},
		{name: "negative size", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:` + hex64 + `","size":-1}}`, wantErr: ErrManifestInvalid},
		{name: "bad media type", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":{"mediaType":"nonsense","digest":"sha256:` + hex64 + `","size":1}}`, wantErr: ErrManifestInvalid},
		{name: "data field mismatch", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:` + hex64 + `","size":2,"data":"e30="}}`, wantErr: ErrManifestInvalid},
		{name: "bad subject", ct: MediaTypeImageManifest, body: `{"schemaVersion":2,"config":` + cfgDesc + `,"subject":{"mediaType":"a/b","digest":"x","size":1}}`, wantErr: ErrManifestInvalid},
		{name: "too large", ct: MediaTypeImageManifest, body: strings.Repeat(" ", MaxManifestSize+1), wantErr: ErrManifestTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseManifest(tc.ct, []byte(tc.body))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tc.wantType || m.ArtifactType != tc.wantArtifact || len(m.RequiredBlobs()) != tc.wantBlobs {
				t.Fatalf("got type %s artifact %s blobs %d", m.MediaType, m.ArtifactType, len(m.RequiredBlobs()))
			}
		})
	}
}
