//go:build linux

package readme

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseBlocks(t *testing.T) {
	tests := []struct {
		name    string
		readme  string
		want    []block
		wantErr string
	}{
		{
			name:   "shell blocks in order, others left out",
			readme: "# T\n\n```sh\necho a\n```\n\n```yaml\nk: v\n```\n\n```\nplain\n```\n\n```bash\necho b\necho c\n```\n",
			want:   []block{{line: 3, text: "echo a\n"}, {line: 15, text: "echo b\necho c\n"}},
		},
		{
			name:   "a marker skips the block after it, blank lines between",
			readme: "<!-- not run by tests: needs internet -->\n\n```sh\ncurl x\n```\n```sh\necho y\n```\n",
			want:   []block{{line: 3, text: "curl x\n", skipReason: "needs internet"}, {line: 6, text: "echo y\n"}},
		},
		{
			name:    "a marker must say why",
			readme:  "<!-- not run by tests: -->\n```sh\necho\n```\n",
			wantErr: "README.md:1: a \"not run by tests\" marker must say why",
		},
		{
			name:    "a marker before a yaml block",
			readme:  "<!-- not run by tests: config -->\n```yaml\nk: v\n```\n",
			wantErr: "README.md:1: the \"not run by tests\" marker stands before a \"yaml\" block",
		},
		{
			name:    "text between a marker and its block",
			readme:  "<!-- not run by tests: x -->\nSome text.\n```sh\necho\n```\n",
			wantErr: "README.md:1: a \"not run by tests\" marker with no shell block right after it",
		},
		{
			name:    "a marker at the end",
			readme:  "```sh\necho\n```\n<!-- not run by tests: x -->\n",
			wantErr: "README.md:4: a \"not run by tests\" marker with no shell block after it",
		},
		{
			name:    "an unclosed block",
			readme:  "```sh\necho\n",
			wantErr: "a fenced block is not closed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBlocks(tt.readme)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
