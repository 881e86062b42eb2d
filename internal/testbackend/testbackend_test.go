package testbackend

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestStartPostgres(t *testing.T) {
	pg, err := StartPostgres()
	need(t, err)
	stopped := false
	defer func() {
		if !stopped {
			pg.Stop()
		}
	}()
	ctx := context.Background()
	a, err := pg.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	b, err := pg.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("two databases with one URL: %s", a)
	}
	for _, dsn := range []string{a, b} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect to %s: %v", dsn, err)
		}
		conn.Close(ctx)
	}

	pg.Stop()
	stopped = true
	if _, err := os.Stat(pg.p.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster %s still there after Stop: %v", pg.p.dir, err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(short, a); err == nil {
		conn.Close(ctx)
		t.Error("server still takes connections after Stop")
	}
}

func TestStartObjectStores(t *testing.T) {
	type store struct {
		newURL func() string
		stop   func()
		s      *server
	}
	for _, tc := range []struct {
		name  string
		start func() (store, error)
	}{
		{"azurite", func() (store, error) {
			az, err := StartAzurite()
			if err != nil {
				return store{}, err
			}
			return store{az.NewContainer, az.Stop, az.s}, nil
		}},
		{"s3", func() (store, error) {
			srv, err := StartS3()
			if err != nil {
				return store{}, err
			}
			return store{srv.NewBucket, srv.Stop, srv.s}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.start()
			need(t, err)
			defer st.stop()
			a, b := st.newURL(), st.newURL()
			if a == b {
				t.Fatalf("two containers with one URL: %s", a)
			}
			u, err := url.Parse(a)
			if err != nil {
				t.Fatal(err)
			}
			endpoint := "http://" + u.Query().Get("domain") + "/"
			if e := u.Query().Get("endpoint"); e != "" {
				endpoint = e + "/"
			}
			if err := answers(endpoint)(context.Background()); err != nil {
				t.Fatalf("%s does not answer: %v", endpoint, err)
			}

			st.stop()
			if _, err := os.Stat(st.s.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data %s still there after Stop: %v", st.s.dir, err)
			}
			client := http.Client{Timeout: 2 * time.Second}
			if resp, err := client.Get(endpoint); err == nil {
				resp.Body.Close()
				t.Errorf("%s still answers after Stop", endpoint)
			}
		})
	}
}

func TestMissingProgramIsNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	orig := goPath
	t.Cleanup(func() { goPath = orig })
	empty := t.TempDir()
	goPath = func() string { return empty }
	if _, err := StartS3(); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("StartS3 without versitygw: %v, want ErrNotInstalled", err)
	}
	if _, err := StartAzurite(); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("StartAzurite without azurite-blob: %v, want ErrNotInstalled", err)
	}
}
