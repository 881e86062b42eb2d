// Package reporoot moves a benchmark program to the repository's root, so
// that the paths it is given and its defaults (bin/, docs/,
// bench/images/build.sh) mean the same whether it was started there or, as
// `go run -C bench` does, in bench/.
package reporoot

import (
	"fmt"
	"os"
	"path/filepath"
)

// Chdir changes to the nearest directory at or above the working directory
// that holds cmd/sluiced.
func Chdir() {
	dir, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, "cmd", "sluiced")); err == nil && st.IsDir() {
			if err := os.Chdir(d); err != nil {
				fail(err)
			}
			return
		}
		if filepath.Dir(d) == d {
			fail(fmt.Errorf("no Sluice checkout at or above %s", dir))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchmark:", err)
	os.Exit(1)
}
