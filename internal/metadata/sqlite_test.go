package metadata_test

import (
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/registry"
)

// The SQLite store is every consumer's store.
var (
	_ registry.Store     = (*metadata.Store)(nil)
	_ conversion.Store   = (*metadata.Store)(nil)
	_ auth.IdentityStore = (*metadata.Store)(nil)
)
