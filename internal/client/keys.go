package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/sluicehq/sluice/internal/trust"
)

// maxKeySet bounds a registry's published key set.
const maxKeySet = 1 << 20

// SigningKeys fetches the keys a registry publishes for verifying its
// streaming artifacts (GET /acr/v1/_keys, no credentials needed). A
// registry that publishes none (not a Sluice registry) answers an empty
// set.
func (c *Client) SigningKeys(ctx context.Context) (trust.JWKS, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.URL("/acr/v1/_keys"), nil)
	if err != nil {
		return trust.JWKS{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.auth.Client.Do(req)
	if err != nil {
		return trust.JWKS{}, fmt.Errorf("signing keys of %s: %w", c.Host, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return trust.JWKS{}, nil
	default:
		return trust.JWKS{}, fmt.Errorf("signing keys of %s: %w", c.Host, ErrorFrom(resp))
	}
	var set trust.JWKS
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxKeySet)).Decode(&set); err != nil {
		return trust.JWKS{}, fmt.Errorf("signing keys of %s: %w", c.Host, err)
	}
	return set, nil
}
