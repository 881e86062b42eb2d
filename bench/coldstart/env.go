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
	// inferred are those the registry inferred when it converted the
	// image, before any start.
	inferred map[string]map[digest.Digest][]streaming.Range
}

func newEnv(ctx context.Context, bin string, opts testbed.Options) (*env, error) {
	r, err := testbed.Start(ctx, bin, opts)
	if err != nil {
		return nil, err
	}
	return &env{Registry: r, profiles: map[string]map[digest.Digest][]streaming.Range{},
		inferred: map[string]map[digest.Digest][]streaming.Range{}}, nil
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

// currentProfiles reads the startup profiles the registry has of a
// workload's image (a layer without one is left out).
func (e *env) currentProfiles(ctx context.Context, w workload) (map[digest.Digest][]streaming.Range, error) {
	out := map[digest.Digest][]streaming.Range{}
	for _, d := range e.Streamed[w.Name] {
		ranges, err := e.Client.StartupProfile(ctx, w.Name, d)
		if err != nil {
			return nil, err
		}
		if ranges != nil {
			out[d] = ranges
		}
	}
	return out, nil
}

// setProfiles makes the registry's profiles of a workload's image exactly
// these: those a first start recorded before a later node's trial, those
// the converter inferred before a first start's. (Given back, an inferred
// profile is stored as a recorded one: a node prefetches both alike, and
// only replaces them differently after the trial's first line.)
func (e *env) setProfiles(ctx context.Context, w workload, profiles map[digest.Digest][]streaming.Range) error {
	if err := e.deleteProfiles(ctx, w); err != nil {
		return err
	}
	for d, ranges := range profiles {
		if err := e.Client.PutStartupProfile(ctx, w.Name, d, ranges); err != nil {
			return err
		}
	}
	return nil
}

// rateBits reads a tc rate ("500mbit", "1gbit", "800kbit") as bits per
// second; "" (unshaped) and byte rates ("10mbps") are errors.
func rateBits(rate string) (float64, error) {
	units := []struct {
		suffix string
		scale  float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(strings.ToLower(rate), u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v <= 0 {
				return 0, fmt.Errorf("rate %q: not a positive number of %s", rate, u.suffix)
			}
			return v * u.scale, nil
		}
	}
	return 0, fmt.Errorf("rate %q: want a number of bit, kbit, mbit or gbit", rate)
}
