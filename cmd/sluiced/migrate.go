package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/migrate"
	"github.com/sluicehq/sluice/internal/server"
)

func newMigrateCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate --from-config OLD.yaml --to-config NEW.yaml",
		Short: "Copy a registry's blobs, metadata and signing keys to other stores",
		Long: `Copy everything a registry keeps from the stores OLD.yaml configures to
those NEW.yaml configures: its blobs (each checked against its digest as it is
written), then its metadata, then its signing keys. A single-machine registry
(SQLite and a directory) moves so to PostgreSQL and a bucket without pushing
anything again.

Stop the registry using OLD.yaml first: what it changes during the copy may be
missed. Uploads under way are not copied; their clients start them again.
What the destination holds already is kept, so a migration cut short is run
again and goes on where it stopped.

SLUICE_* variables apply to NEW.yaml only (SLUICE_DATABASE_DSN keeps the
PostgreSQL password out of the file); OLD.yaml is read as it is.`,
		Example: `  SLUICE_DATABASE_DSN=postgres://sluice:secret@db:5432/sluice \
    sluiced migrate --from-config /etc/sluice/old.yaml --to-config /etc/sluice/new.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return errors.New("migrate needs --from-config and --to-config")
			}
			src, err := config.Load(from, nil)
			if err != nil {
				return err
			}
			dst, err := config.Load(to, os.Environ())
			if err != nil {
				return err
			}
			if err := errors.Join(src.ResolvePaths(), dst.ResolvePaths()); err != nil {
				return err
			}
			log := newLogger(dst)
			ctx := cmd.Context()
			srcMeta, srcBlobs, err := server.OpenStores(ctx, src)
			if err != nil {
				return fmt.Errorf("open the stores of %s: %w", from, err)
			}
			defer srcMeta.Close()
			defer srcBlobs.Close()
			dstMeta, dstBlobs, err := server.OpenStores(ctx, dst)
			if err != nil {
				return fmt.Errorf("open the stores of %s: %w", to, err)
			}
			defer dstMeta.Close()
			defer dstBlobs.Close()
			rep, err := migrate.Run(ctx, migrate.Stores{Meta: srcMeta, Blobs: srcBlobs}, migrate.Stores{Meta: dstMeta, Blobs: dstBlobs}, log)
			if err != nil {
				return err
			}
			keys, err := copyKeys(src.KeyDir(), dst.KeyDir())
			if err != nil {
				return fmt.Errorf("copy signing keys: %w", err)
			}
			// On PostgreSQL the replicas share the keys through the
			// database, which takes those copied now (unless it has keys).
			if dst.Database.Driver == "postgres" {
				if _, err := server.OpenKeys(ctx, dst, dstMeta); err != nil {
					return err
				}
			}
			var rows int64
			for _, n := range rep.Rows {
				rows += n
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated: %d blobs copied (%d bytes), %d already there, %d metadata rows, %d signing key files\n",
				rep.BlobsCopied, rep.BlobBytes, rep.BlobsPresent, rows, keys)
			if len(rep.BlobsMissing) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d blobs the old metadata records were missing from the old blob store and were not copied: %v\n", len(rep.BlobsMissing), rep.BlobsMissing)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from-config", "", "configuration of the registry to copy from")
	cmd.Flags().StringVar(&to, "to-config", "", "configuration of the stores to copy to")
	return cmd
}

// copyKeys copies the files of the signing key directory from into to
// and returns how many it copied, so that tokens and streaming artifacts
// signed before the migration stay valid after it. Files to has already
// are kept; a to with files from does not have holds keys of its own, and
// is left alone.
func copyKeys(from, to string) (int, error) {
	if filepath.Clean(from) == filepath.Clean(to) {
		return 0, nil
	}
	entries, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	have := map[string]bool{}
	if existing, err := os.ReadDir(to); err == nil {
		for _, e := range existing {
			have[e.Name()] = true
		}
	}
	src := map[string]bool{}
	for _, e := range entries {
		src[e.Name()] = true
	}
	for name := range have {
		if !src[name] {
			return 0, nil
		}
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || have[e.Name()] {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return n, err
		}
		info, err := e.Info()
		if err != nil {
			return n, err
		}
		if err := atomicfile.WriteFile(filepath.Join(to, e.Name()), b, info.Mode().Perm()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
