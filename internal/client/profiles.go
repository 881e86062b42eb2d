package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/streaming"
)

// ErrNoProfiles means the registry does not keep startup profiles (it is
// not Sluice).
var ErrNoProfiles = errors.New("the registry keeps no startup profiles")

// StartupProfile returns the startup profile of a streamed layer in repo:
// the byte ranges of the chunks containers read first, in the order they
// read them; nil (and no error) when the registry has none yet, and
// ErrNoProfiles from a registry that does not keep them.
func (c *Client) StartupProfile(ctx context.Context, repo string, layer digest.Digest) ([]streaming.Range, error) {
	p, err := c.StartupProfileOf(ctx, repo, layer)
	return p.Ranges, err
}

// StartupProfile is a layer's startup profile as the registry gives it.
type StartupProfile struct {
	Ranges []streaming.Range
	// Inferred: the converter's guess from the image config, which a
	// node's recording of a start should replace.
	Inferred bool
}

// StartupProfileOf is StartupProfile with where the profile came from.
func (c *Client) StartupProfileOf(ctx context.Context, repo string, layer digest.Digest) (StartupProfile, error) {
	b, _, err := c.API(repositoryScoped(ctx, c.Host, repo), "GET", "/acr/v1/"+repo+"/_profiles/"+layer.String(), nil, nil)
	var e *Error
	if errors.As(err, &e) && e.Code == "PROFILE_UNKNOWN" {
		return StartupProfile{}, nil
	}
	// No such endpoint: another registry (a 404 without a code, or a
	// 405), or a Sluice from before profiles. A 404 with another code (the
	// repository or the layer unknown) is an error of its own.
	noEndpoint := errors.As(err, &e) && (e.Code == "" || e.Code == "NOT_FOUND")
	if (noEndpoint && IsStatus(err, http.StatusNotFound)) || IsStatus(err, http.StatusMethodNotAllowed) {
		return StartupProfile{}, fmt.Errorf("%w: %v", ErrNoProfiles, err)
	}
	if err != nil {
		return StartupProfile{}, err
	}
	var body struct {
		Ranges []streaming.Range `json:"ranges"`
		Source string            `json:"source"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return StartupProfile{}, fmt.Errorf("startup profile of %s: %w", layer, err)
	}
	return StartupProfile{Ranges: body.Ranges, Inferred: body.Source == "inferred"}, nil
}

// PutStartupProfile gives the registry the startup profile a node recorded
// for a streamed layer in repo.
func (c *Client) PutStartupProfile(ctx context.Context, repo string, layer digest.Digest, ranges []streaming.Range) error {
	body := struct {
		Ranges []streaming.Range `json:"ranges"`
	}{ranges}
	_, _, err := c.API(repositoryScoped(ctx, c.Host, repo), "PUT", "/acr/v1/"+repo+"/_profiles/"+layer.String(), nil, body)
	return err
}

// repositoryScoped says in ctx that a request is for repo (pull is what
// the profile routes need), so that credentials kept for one repository
// only, as a node keeps a pod's pull secret, are found for it.
func repositoryScoped(ctx context.Context, host, repo string) context.Context {
	return auth.AppendScopesForHost(ctx, host, auth.ScopeRepository(repo, auth.ActionPull))
}
