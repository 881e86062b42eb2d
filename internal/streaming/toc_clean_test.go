package streaming

import (
	"path"
	"testing"
)

// alreadyClean must agree with path.Clean whenever it answers.
func FuzzAlreadyClean(f *testing.F) {
	for _, s := range []string{"usr/bin/x", "./usr/bin/", "a//b", "a/./b", "a/../b", "..", ".", "./", "/abs", "a/b/..", "...", "a/.../b", ".a/b."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, ok := alreadyClean(name)
		if !ok {
			return
		}
		want := path.Clean("/" + name)[1:]
		if got != want {
			t.Fatalf("alreadyClean(%q) = %q, path.Clean says %q", name, got, want)
		}
	})
}
