package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/bench/internal/testbed"
	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// env is the registry the trials pull from, with what the trials keep of
// it.
type env struct {
	*testbed.Registry
	// profiles are the startup profiles a first start recorded, by
	// workload and streamed layer.
	profiles map[string]map[digest.Digest][]streaming.Range
}

func newEnv(ctx context.Context, bin string, opts testbed.Options) (*env, error) {
	r, err := testbed.Start(ctx, bin, opts)
	if err != nil {
		return nil, err
	}
	return &env{Registry: r, profiles: map[string]map[digest.Digest][]streaming.Range{}}, nil
}

// hasProfiles reports whether the registry has a startup profile of every
// streamed layer of a workload's image.
func (e *env) hasProfiles(ctx context.Context, w workload) bool {
	for _, d := range e.Streamed[w.Name] {
		if ranges, err := e.Client.StartupProfile(ctx, w.Name, d); err != nil || ranges == nil {
			return false
		}
	}
	return true
}

// deleteProfiles makes the registry forget the startup profiles of a
// workload's image, so that the next start is a first one.
func (e *env) deleteProfiles(ctx context.Context, w workload) error {
	for _, d := range e.Streamed[w.Name] {
		_, _, err := e.Client.API(ctx, "DELETE", "/acr/v1/"+w.Name+"/_profiles/"+d.String(), nil, nil)
		if err != nil && !client.IsStatus(err, http.StatusNotFound) {
			return err
		}
	}
	return nil
}

// shape limits the registry's outgoing traffic on lo to rate.
func shape(port int, rate string) error {
	unshape()
	cmds := [][]string{
		{"qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20"},
		{"class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit"},
		{"class", "add", "dev", "lo", "parent", "1:1", "classid", "1:10", "htb", "rate", rate, "ceil", rate, "burst", "64k", "cburst", "64k"},
		{"class", "add", "dev", "lo", "parent", "1:1", "classid", "1:20", "htb", "rate", "100gbit"},
		{"filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "sport", strconv.Itoa(port), "0xffff", "flowid", "1:10"},
	}
	for _, c := range cmds {
		if out, err := exec.Command("tc", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("tc %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

func unshape() { _ = exec.Command("tc", "qdisc", "del", "dev", "lo", "root").Run() }

// saveProfiles keeps the startup profiles of a workload's image that the
// registry has now, for restoreProfiles.
func (e *env) saveProfiles(ctx context.Context, w workload) error {
	e.profiles[w.Name] = map[digest.Digest][]streaming.Range{}
	for _, d := range e.Streamed[w.Name] {
		ranges, err := e.Client.StartupProfile(ctx, w.Name, d)
		if err != nil {
			return err
		}
		e.profiles[w.Name][d] = ranges
	}
	return nil
}

// restoreProfiles gives the registry back the saved profiles of a
// workload's image, when a first start's trial made it forget them.
func (e *env) restoreProfiles(ctx context.Context, w workload) error {
	if e.hasProfiles(ctx, w) {
		return nil
	}
	for d, ranges := range e.profiles[w.Name] {
		if err := e.Client.PutStartupProfile(ctx, w.Name, d, ranges); err != nil {
			return err
		}
	}
	return nil
}
