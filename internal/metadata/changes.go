package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// changeChannel is the PostgreSQL notification channel on which processes
// sharing the database tell each other what changed.
const changeChannel = "sluice_changes"

// Notify tells every process sharing the database, this one included,
// that what topic names changed, so that they drop what they cached of it.
// The notice goes out when the database commits it, at once. On SQLite
// (one process) it does nothing.
func (s *Store) Notify(ctx context.Context, topic string) error {
	if s.dialect != postgres {
		return nil
	}
	if _, err := s.write.ExecContext(ctx, `SELECT pg_notify($1, $2)`, changeChannel, topic); err != nil {
		return fmt.Errorf("notify %s: %w", topic, err)
	}
	return nil
}

// Subscribe calls fn, from a goroutine of its own, with the topic of each
// notice any process sharing the database sends, until ctx ends. While
// its connection is lost notices may be missed: once it is back fn is
// called with "" (anything may have changed). On SQLite it never calls fn.
func (s *Store) Subscribe(ctx context.Context, fn func(topic string)) {
	if s.dialect != postgres {
		return
	}
	go func() {
		first := true
		for ctx.Err() == nil {
			err := s.listen(ctx, func() {
				if !first {
					fn("")
				}
				first = false
			}, fn)
			if ctx.Err() != nil {
				return
			}
			slog.Warn("listening for changes from other processes: connection lost; reconnecting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// listen holds a connection of its own that listens on the channel,
// calling listening once it does, and fn for each notice.
func (s *Store) listen(ctx context.Context, listening func(), fn func(string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pgConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+changeChannel); err != nil {
		return err
	}
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}
