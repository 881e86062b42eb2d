package conversion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// ImportRequest is the body of POST /acr/v1/_import, in the managed
// service's shape.
type ImportRequest struct {
	Source struct {
		// RegistryURI is the source registry's host[:port]; an http://
		// prefix selects plain HTTP.
		RegistryURI string `json:"registryUri"`
		// SourceImage is repository:tag or repository@digest.
		SourceImage string             `json:"sourceImage"`
		Credentials *ImportCredentials `json:"credentials,omitempty"`
	} `json:"source"`
	// TargetTags are repository:tag names to import to.
	TargetTags []string `json:"targetTags"`
	// UntaggedTargetRepositories receive the image without a tag.
	UntaggedTargetRepositories []string `json:"untaggedTargetRepositories"`
	// Mode is NoForce (the default: refuse if a target tag exists) or Force.
	Mode string `json:"mode"`
}

// ImportCredentials authenticate to the source registry. They are kept in
// memory only, never written to the metadata store.
type ImportCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// importTarget is one repository an import writes to, with its tags.
type importTarget struct {
	Repository string   `json:"repository"`
	Tags       []string `json:"tags"`
}

// storedImport is what an import operation records of its request.
type storedImport struct {
	RegistryURI string         `json:"registryUri"`
	SourceImage string         `json:"sourceImage"`
	Targets     []importTarget `json:"targets"`
	Force       bool           `json:"force"`
}

// credentials of imports in flight, by operation id.
var importCredentials sync.Map

// StartImport validates an import request and enqueues its operation,
// started by startedBy. With NoForce, an existing target tag fails the
// request before anything is copied.
func (s *Service) StartImport(ctx context.Context, req *ImportRequest, startedBy string) (*metadata.Operation, error) {
	st, err := parseImport(req)
	if err != nil {
		return nil, err
	}
	return s.enqueueImport(ctx, st, req.Source.Credentials, startedBy)
}

// enqueueImport enqueues the import st, once its NoForce targets are
// checked; creds, when set, are kept in memory for its worker.
func (s *Service) enqueueImport(ctx context.Context, st *storedImport, creds *ImportCredentials, startedBy string) (*metadata.Operation, error) {
	if !st.Force {
		for _, t := range st.Targets {
			for _, tag := range t.Tags {
				if _, err := s.reg.GetManifest(ctx, t.Repository, oci.Reference{Tag: tag}, false); err == nil {
					return nil, errorf(CodeTagAlreadyExists, "tag %s:%s already exists; import with mode Force to overwrite it", t.Repository, tag)
				}
			}
		}
	}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	op := &metadata.Operation{ID: uuid.NewString(), Kind: KindImport, Repository: st.Targets[0].Repository,
		Digest: st.RegistryURI + "/" + st.SourceImage, Request: string(body), Details: "Import queued", StartedBy: startedBy}
	if creds != nil {
		importCredentials.Store(op.ID, *creds)
	}
	got, err := s.store.CreateOperation(ctx, op)
	if err != nil && !errors.Is(err, metadata.ErrOperationActive) {
		importCredentials.Delete(op.ID)
		return nil, err
	}
	s.Enqueued()
	return got, nil
}

// ImportTargets are the repositories an import operation writes to, read
// from its stored request.
func ImportTargets(op *metadata.Operation) ([]string, error) {
	var st storedImport
	if err := json.Unmarshal([]byte(op.Request), &st); err != nil {
		return nil, fmt.Errorf("import %s: stored request: %w", op.ID, err)
	}
	repos := make([]string, len(st.Targets))
	for i, t := range st.Targets {
		repos[i] = t.Repository
	}
	return repos, nil
}

func parseImport(req *ImportRequest) (*storedImport, error) {
	st := &storedImport{RegistryURI: strings.TrimSuffix(req.Source.RegistryURI, "/"), SourceImage: req.Source.SourceImage}
	switch req.Mode {
	case "", "NoForce":
	case "Force":
		st.Force = true
	default:
		return nil, errorf(CodeInvalidImportRequest, "mode %q: use NoForce or Force", req.Mode)
	}
	if st.RegistryURI == "" || st.SourceImage == "" {
		return nil, errorf(CodeInvalidImportRequest, "source.registryUri and source.sourceImage are required")
	}
	if _, err := remote.NewRepository(sourceReference(st)); err != nil {
		return nil, errorf(CodeInvalidImportRequest, "source %s: %v", sourceReference(st), err)
	}
	index := map[string]int{}
	add := func(repo, tag string) error {
		if err := oci.ValidateName(repo); err != nil {
			return errorf(CodeInvalidImportRequest, "%v", err)
		}
		i, ok := index[repo]
		if !ok {
			i = len(st.Targets)
			index[repo] = i
			st.Targets = append(st.Targets, importTarget{Repository: repo})
		}
		if tag != "" {
			if err := oci.ValidateTag(tag); err != nil {
				return errorf(CodeInvalidImportRequest, "%v", err)
			}
			st.Targets[i].Tags = append(st.Targets[i].Tags, tag)
		}
		return nil
	}
	for _, tt := range req.TargetTags {
		repo, tag, ok := strings.Cut(tt, ":")
		if !ok || tag == "" {
			return nil, errorf(CodeInvalidImportRequest, "target tag %q: use repository:tag", tt)
		}
		if err := add(repo, tag); err != nil {
			return nil, err
		}
	}
	for _, repo := range req.UntaggedTargetRepositories {
		if err := add(repo, ""); err != nil {
			return nil, err
		}
	}
	if len(st.Targets) == 0 {
		return nil, errorf(CodeInvalidImportRequest, "give at least one target tag or untagged target repository")
	}
	return st, nil
}

// sourceReference is the source as host/repository:tag or @digest, with
// the host stripped of any scheme.
func sourceReference(st *storedImport) string {
	host := strings.TrimPrefix(strings.TrimPrefix(st.RegistryURI, "https://"), "http://")
	ref := host + "/" + st.SourceImage
	if !strings.ContainsAny(st.SourceImage, ":@") {
		ref += ":latest"
	}
	return ref
}

// runImport copies the source image, with every platform of an index and
// digests preserved, into the first target repository from the source
// registry, then into the others from the first, and sets the tags.
func (s *Service) runImport(ctx context.Context, op *metadata.Operation, p *progress) (string, error) {
	defer importCredentials.Delete(op.ID)
	var st storedImport
	if err := json.Unmarshal([]byte(op.Request), &st); err != nil {
		return "", errorf(CodeInvalidImportRequest, "stored request: %v", err)
	}
	ref := sourceReference(&st)
	src, err := remote.NewRepository(ref)
	if err != nil {
		return "", errorf(CodeInvalidImportRequest, "source %s: %v", ref, err)
	}
	src.PlainHTTP = strings.HasPrefix(st.RegistryURI, "http://")
	client := &auth.Client{Client: &http.Client{Transport: retry.NewTransport(http.DefaultTransport)}, Cache: auth.NewCache()}
	if v, ok := importCredentials.Load(op.ID); ok {
		c := v.(ImportCredentials)
		client.Credential = auth.StaticCredential(src.Reference.Registry, auth.Credential{Username: c.Username, Password: c.Password})
	}
	src.Client = client
	desc, err := src.Resolve(ctx, src.Reference.Reference)
	if err != nil {
		return "", importSourceError(ref, err)
	}
	opts := oras.CopyGraphOptions{
		Concurrency: 3,
		PreCopy: func(_ context.Context, d ocispec.Descriptor) error {
			p.total.Add(d.Size)
			return nil
		},
		PostCopy: func(_ context.Context, d ocispec.Descriptor) error {
			p.done.Add(d.Size)
			return nil
		},
		OnCopySkipped: func(_ context.Context, d ocispec.Descriptor) error {
			p.total.Add(d.Size)
			p.done.Add(d.Size)
			return nil
		},
	}
	var from content.ReadOnlyStorage = src
	first := ""
	for _, t := range st.Targets {
		dst := &registryStorage{s: s, repo: t.Repository, mountFrom: first}
		if err := oras.CopyGraph(ctx, from, dst, desc, opts); err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return "", importSourceError(ref, err)
		}
		for _, tag := range t.Tags {
			if err := s.tagImported(ctx, t.Repository, tag, desc, st.Force); err != nil {
				return "", err
			}
		}
		if first == "" {
			first = t.Repository
			from = &registryStorage{s: s, repo: first}
		}
	}
	b, _ := json.Marshal(struct {
		Digest  digest.Digest  `json:"digest"`
		Targets []importTarget `json:"targets"`
	}{desc.Digest, st.Targets})
	return string(b), nil
}

// importSourceError explains a failure to read the source, saying what to
// do when it is about credentials.
func importSourceError(ref string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "credential not found") || strings.Contains(msg, "401") || strings.Contains(msg, "unauthorized") {
		return errorf(CodeImportSourceFailed, "the source registry refused to serve %s without valid credentials: give source.credentials (username and password) of an account that can pull it (%v)", ref, err)
	}
	if strings.Contains(msg, "404") || strings.Contains(msg, "not found") {
		return errorf(CodeImportSourceFailed, "%s was not found in the source registry (%v)", ref, err)
	}
	return errorf(CodeImportSourceFailed, "reading %s from the source registry: %v", ref, err)
}

// tagImported points a tag at an imported manifest; without force, a tag
// created meanwhile for another manifest is not moved.
func (s *Service) tagImported(ctx context.Context, repo, tag string, desc ocispec.Descriptor, force bool) error {
	if !force {
		if cur, err := s.reg.GetManifest(ctx, repo, oci.Reference{Tag: tag}, false); err == nil && cur.Digest != desc.Digest {
			return errorf(CodeTagAlreadyExists, "tag %s:%s already exists; import with mode Force to overwrite it", repo, tag)
		}
	}
	m, err := s.reg.GetManifest(ctx, repo, oci.Reference{Digest: desc.Digest.String()}, true)
	if err != nil {
		return err
	}
	_, err = s.reg.PutManifest(ctx, repo, oci.Reference{Tag: tag}, m.MediaType, m.Payload, nil)
	return err
}

// registryStorage lets oras copy into (or out of) one repository of this
// registry through the registry service, so imported content is verified
// and indexed like any push.
type registryStorage struct {
	s    *Service
	repo string
	// mountFrom, when set, is a repository of this registry that already
	// holds the blobs: they are linked from it instead of copied.
	mountFrom string
}

func isManifest(d ocispec.Descriptor) bool { return oci.IsManifestMediaType(d.MediaType) }

func (r *registryStorage) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	if isManifest(d) {
		_, err := r.s.reg.GetManifest(ctx, r.repo, oci.Reference{Digest: d.Digest.String()}, false)
		return err == nil, nil
	}
	_, err := r.s.reg.StatBlob(ctx, r.repo, d.Digest)
	return err == nil, nil
}

func (r *registryStorage) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if isManifest(d) {
		m, err := r.s.reg.GetManifest(ctx, r.repo, oci.Reference{Digest: d.Digest.String()}, true)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader(string(m.Payload))), nil
	}
	c, err := r.s.reg.OpenBlob(ctx, r.repo, d.Digest)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (r *registryStorage) Push(ctx context.Context, d ocispec.Descriptor, content io.Reader) error {
	if isManifest(d) {
		payload, err := io.ReadAll(io.LimitReader(content, oci.MaxManifestSize+1))
		if err != nil {
			return err
		}
		_, err = r.s.reg.PutManifest(ctx, r.repo, oci.Reference{Digest: d.Digest.String()}, d.MediaType, payload, nil)
		return err
	}
	if r.mountFrom != "" {
		if _, err := r.s.reg.MountBlob(ctx, r.repo, r.mountFrom, d.Digest); err == nil {
			_, _ = io.Copy(io.Discard, content)
			return nil
		}
	}
	size, err := r.s.reg.PutBlob(ctx, r.repo, d.Digest, content)
	if err != nil {
		return err
	}
	if size != d.Size {
		return fmt.Errorf("blob %s is %d bytes, its descriptor says %d", d.Digest, size, d.Size)
	}
	return nil
}

// Predecessors is not needed to copy into the registry.
func (r *registryStorage) Predecessors(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return nil, nil
}
