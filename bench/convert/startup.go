package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// listModules prints the files of the modules python has imported.
const listModules = `
import sys
for m in list(sys.modules.values()):
    f = getattr(m, '__cached__', None) or getattr(m, '__file__', None)
    if f:
        print(f)
`

// startupFiles runs python3 in the root filesystem (chroot) and lists the
// files it opens at start: the interpreter, the shared libraries the loader
// maps (LD_DEBUG=files) and the modules it imports (their .pyc when there is
// one). importStmt is run first ("" for a bare interpreter). The paths are
// resolved inside root and returned relative to it.
func startupFiles(root, importStmt string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(root, "usr/bin/python3")); err != nil {
		return nil, fmt.Errorf("no python3 in %s: %w", root, err)
	}
	cmd := exec.Command("chroot", root, "/usr/bin/python3", "-c", importStmt+"\n"+listModules)
	cmd.Env = []string{"LD_DEBUG=files", "PATH=/usr/bin:/bin", "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("python3 in %s: %v: %s", root, err, lastLine(stderr.String()))
	}
	set := map[string]bool{"/usr/bin/python3": true}
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if _, lib, ok := strings.Cut(sc.Text(), "calling init: "); ok {
			set[strings.TrimSpace(lib)] = true
		}
	}
	sc = bufio.NewScanner(&stdout)
	for sc.Scan() {
		set[strings.TrimSpace(sc.Text())] = true
	}
	var files []string
	for f := range set {
		if rel, ok := resolveIn(root, f); ok {
			files = append(files, rel)
		}
	}
	sort.Strings(files)
	return dedupe(files), nil
}

// resolveIn follows symlinks of an absolute path inside root, never
// leaving it, and returns the path relative to root.
func resolveIn(root, p string) (string, bool) {
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	for hops := 0; len(parts) > 0 && hops < 64; {
		next := filepath.Join(cur, parts[0])
		parts = parts[1:]
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			cur = next
			continue
		}
		hops++
		if !filepath.IsAbs(target) {
			target = filepath.Join(cur, target)
		}
		parts = append(strings.Split(strings.TrimPrefix(filepath.Clean(target), "/"), "/"), parts...)
		cur = "/"
	}
	if _, err := os.Stat(filepath.Join(root, cur)); err != nil {
		return "", false
	}
	return strings.TrimPrefix(cur, "/"), true
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
