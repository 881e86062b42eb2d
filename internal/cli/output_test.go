package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestOutputFormats(t *testing.T) {
	tok := map[string]any{
		"name": "ci", "status": "enabled", "count": float64(536870912000), "ok": true, "none": nil,
		"credentials": map[string]any{"username": "ci", "passwords": []any{map[string]any{"name": "password1", "value": "s3cret"}}},
	}
	list := []any{map[string]any{"name": "a", "size": float64(1)}, map[string]any{"name": "bbbb", "size": float64(22), "extra": "x"}}
	tests := []struct {
		name, format, query string
		in                  any
		table               tableFunc
		want                string
	}{
		{"json sorted, big numbers exact", "json", "", map[string]any{"b": float64(536870912000), "a": "<x>"}, nil,
			"{\n  \"a\": \"<x>\",\n  \"b\": 536870912000\n}\n"},
		{"jsonc without a terminal is plain", "jsonc", "", []any{"a"}, nil, "[\n  \"a\"\n]\n"},
		{"query to a scalar, tsv prints just it", "tsv", "credentials.passwords[0].value", tok, nil, "s3cret\n"},
		{"query to a scalar, json quotes it", "json", "credentials.passwords[0].value", tok, nil, "\"s3cret\"\n"},
		{"tsv of an object: values in key order, nested list as its length, object empty", "tsv", "", tok, nil,
			"536870912000\t\tci\t\ttrue\tenabled\n"},
		{"tsv of a list: a line per item", "tsv", "", list, nil, "a\t1\nx\tbbbb\t22\n"},
		{"tsv of a list of scalars", "tsv", "", []any{"x", float64(2), false}, nil, "x\n2\nfalse\n"},
		{"table of a list: union of scalar columns", "table", "", list, nil,
			"Name  Size  Extra\n----  ----  -----\na     1\nbbbb  22    x\n"},
		{"table of scalars", "table", "", []any{"team/app", "base"}, nil, "Result\n--------\nteam/app\nbase\n"},
		{"table of lists", "table", "[].[name, size]", list, nil, "Column1  Column2\n-------  -------\na        1\nbbbb     22\n"},
		{"table function", "table", "", tok, columns("", [2]string{"Name", "name"}, [2]string{"User", "credentials.username"}),
			"Name  User\n----  ----\nci    ci\n"},
		{"a query skips the table function", "table", "{n: name}", tok, columns("", [2]string{"Other", "status"}), "N\n--\nci\n"},
		{"yaml", "yaml", "", map[string]any{"a": []any{"x"}, "num": float64(3)}, nil, "a:\n  - x\nnum: 3\n"},
		{"yaml: big whole numbers as integers, fractions as they are", "yaml", "",
			map[string]any{"size": float64(173556353), "limit": float64(536870912000), "ratio": 0.25, "l": []any{float64(-1e7)}}, nil,
			"l:\n  - -10000000\nlimit: 536870912000\nratio: 0.25\nsize: 173556353\n"},
		{"yamlc as yaml", "yamlc", "", []any{float64(5e11), 1.5e-7}, nil, "- 500000000000\n- 1.5e-07\n"},
		{"tsv: big whole numbers as integers", "tsv", "", []any{float64(173556353), float64(536870912000), 0.25}, nil,
			"173556353\n536870912000\n0.25\n"},
		{"table: big whole numbers as integers", "table", "", map[string]any{"size": float64(173556353), "ratio": 0.25}, nil,
			"Ratio  Size\n-----  ---------\n0.25   173556353\n"},
		{"none", "none", "", tok, nil, ""},
		{"null prints nothing", "json", "nothing", tok, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := newOutput(tt.format, tt.query, false)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := o.write(&buf, tt.in, tt.table); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("got\n%q\nwant\n%q", buf.String(), tt.want)
			}
		})
	}
}

func TestColorJSON(t *testing.T) {
	o, _ := newOutput("jsonc", "", true)
	var buf bytes.Buffer
	if err := o.write(&buf, map[string]any{"k": "v", "n": float64(1), "b": true, "z": nil, "l": []any{}}, nil); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{colorKey + `"k"` + colorReset, colorString + `"v"` + colorReset, colorNumber + "1" + colorReset,
		colorLit + "true" + colorReset, colorLit + "null" + colorReset, `"l"` + colorReset + ": []"} {
		if !strings.Contains(got, want) {
			t.Errorf("jsonc output lacks %q:\n%s", want, got)
		}
	}
	plain := strings.NewReplacer(colorKey, "", colorString, "", colorNumber, "", colorLit, "", colorReset, "").Replace(got)
	var want bytes.Buffer
	_ = writeJSON(&want, map[string]any{"k": "v", "n": float64(1), "b": true, "z": nil, "l": []any{}})
	if plain != want.String() {
		t.Errorf("jsonc without colours differs from json:\n%s\n%s", plain, want.String())
	}
}

func TestOutputErrors(t *testing.T) {
	if _, err := newOutput("xml", "", false); err == nil || !strings.Contains(err.Error(), "jsonc") {
		t.Errorf("unknown format: %v", err)
	}
	if _, err := newOutput("json", "a[", false); err == nil || !strings.Contains(err.Error(), "JMESPath") {
		t.Errorf("bad query: %v", err)
	}
}
