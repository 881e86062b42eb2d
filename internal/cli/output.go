package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jmespath/go-jmespath"
	"go.yaml.in/yaml/v3"
)

// outputFormats are the values of -o/--output, as in az.
var outputFormats = []string{"json", "jsonc", "table", "tsv", "yaml", "yamlc", "none"}

// tableFunc shapes a command's result into rows for -o table (az's table
// transformers); it is skipped when --query is given.
type tableFunc func(v any) []tableRow

// tableRow is one row of a table, its cells in column order.
type tableRow []tableCell

type tableCell struct {
	Header string
	Value  any
}

// output is how a command's result is printed.
type output struct {
	format string
	query  *jmespath.JMESPath
	color  bool // jsonc: colours on (stdout is a terminal)
}

// newOutput checks -o and --query.
func newOutput(format, query string, color bool) (*output, error) {
	o := &output{format: format, color: color}
	if !slices.Contains(outputFormats, format) {
		return nil, usageErrorf("--output %q: use one of %s", format, strings.Join(outputFormats, ", "))
	}
	if query != "" {
		q, err := jmespath.Compile(query)
		if err != nil {
			return nil, usageErrorf("--query %q is not a valid JMESPath query: %v", query, err)
		}
		o.query = q
	}
	return o, nil
}

// generic turns any value into the plain JSON model (maps, slices,
// float64, string, bool, nil) that queries and formatters walk.
func generic(v any) (any, error) {
	if raw, ok := v.(json.RawMessage); ok {
		var out any
		return out, json.Unmarshal(raw, &out)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

// write queries v and prints it in the chosen format.
func (o *output) write(w io.Writer, v any, table tableFunc) error {
	if o.query != nil {
		var err error
		if v, err = o.query.Search(v); err != nil {
			return fmt.Errorf("--query: %w", err)
		}
	}
	switch o.format {
	case "none":
		return nil
	case "json", "jsonc":
		if o.format == "jsonc" && o.color {
			var buf bytes.Buffer
			writeColorJSON(&buf, v, "")
			buf.WriteByte('\n')
			_, err := w.Write(buf.Bytes())
			return err
		}
		return writeJSON(w, v)
	case "yaml", "yamlc":
		if v == nil {
			return nil
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(yamlValue(v)); err != nil {
			return err
		}
		return enc.Close()
	case "tsv":
		return writeTSV(w, v)
	case "table":
		var rows []tableRow
		if table != nil && o.query == nil {
			rows = table(v)
		} else {
			rows = autoTable(v)
		}
		return writeTable(w, rows)
	}
	return fmt.Errorf("unknown output format %q", o.format)
}

func writeJSON(w io.Writer, v any) error {
	if v == nil {
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// yamlValue is v with each whole number as an int64. The generic model holds
// every number as a float64, which the YAML encoder writes in exponent
// form from a million on (size: 1.73556353e+08) where json, tsv and table
// print 173556353; fractions stay as they are.
func yamlValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = yamlValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = yamlValue(e)
		}
		return out
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < math.MaxInt64 {
			return int64(x)
		}
	}
	return v
}

// ANSI colours of jsonc.
const (
	colorKey    = "\x1b[94m"
	colorString = "\x1b[32m"
	colorNumber = "\x1b[36m"
	colorLit    = "\x1b[95m"
	colorReset  = "\x1b[0m"
)

// writeColorJSON writes v as indented JSON with coloured keys and values.
func writeColorJSON(buf *bytes.Buffer, v any, indent string) {
	quote := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			buf.WriteString("{}")
			return
		}
		keys := sortedKeys(x)
		buf.WriteString("{\n")
		for i, k := range keys {
			buf.WriteString(indent + "  " + colorKey + quote(k) + colorReset + ": ")
			writeColorJSON(buf, x[k], indent+"  ")
			if i < len(keys)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + "}")
	case []any:
		if len(x) == 0 {
			buf.WriteString("[]")
			return
		}
		buf.WriteString("[\n")
		for i, e := range x {
			buf.WriteString(indent + "  ")
			writeColorJSON(buf, e, indent+"  ")
			if i < len(x)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + "]")
	case string:
		buf.WriteString(colorString + quote(x) + colorReset)
	case float64:
		buf.WriteString(colorNumber + formatNumber(x) + colorReset)
	case nil:
		buf.WriteString(colorLit + "null" + colorReset)
	default:
		buf.WriteString(colorLit + fmt.Sprint(x) + colorReset)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// scalarText is a scalar as tsv and table print it.
func scalarText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return formatNumber(x)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}

// writeTSV prints values tab-separated without headers, the way az does:
// a list prints one line per item, an object its values in key order, a
// nested list its length and a nested object an empty field (so that
// columns stay aligned), a scalar just itself.
func writeTSV(w io.Writer, v any) error {
	if v == nil {
		return nil
	}
	items, ok := v.([]any)
	if !ok {
		items = []any{v}
	}
	var b strings.Builder
	for _, item := range items {
		var fields []any
		switch x := item.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				fields = append(fields, x[k])
			}
		case []any:
			fields = x
		default:
			fields = []any{x}
		}
		for i, f := range fields {
			if i > 0 {
				b.WriteByte('\t')
			}
			switch y := f.(type) {
			case []any:
				b.WriteString(strconv.Itoa(len(y)))
			case map[string]any:
			default:
				b.WriteString(scalarText(y))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// autoTable makes az's default table: one row per item of a list (one row
// for an object), with a column for each scalar field; lists of lists give
// Column1, Column2...; scalars a Result column.
func autoTable(v any) []tableRow {
	items, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil
		}
		items = []any{v}
	}
	rows := make([]tableRow, 0, len(items))
	for _, item := range items {
		var row tableRow
		switch x := item.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				if isScalar(x[k]) && x[k] != nil {
					row = append(row, tableCell{Header: capitalize(k), Value: x[k]})
				}
			}
		case []any:
			for i, e := range x {
				row = append(row, tableCell{Header: fmt.Sprintf("Column%d", i+1), Value: e})
			}
		default:
			row = tableRow{{Header: "Result", Value: x}}
		}
		rows = append(rows, row)
	}
	return rows
}

func isScalar(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	return true
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// writeTable prints rows as a column table: a header line, a line of
// dashes, then the rows, columns two spaces apart. Columns are those of
// every row, in the order they first appear.
func writeTable(w io.Writer, rows []tableRow) error {
	var headers []string
	index := map[string]int{}
	for _, r := range rows {
		for _, c := range r {
			if _, ok := index[c.Header]; !ok {
				index[c.Header] = len(headers)
				headers = append(headers, c.Header)
			}
		}
	}
	if len(headers) == 0 {
		return nil
	}
	cells := make([][]string, len(rows))
	widths := make([]int, len(headers))
	for i, h := range headers {
		widths[i] = len(h)
	}
	for i, r := range rows {
		cells[i] = make([]string, len(headers))
		for _, c := range r {
			text := tableText(c.Value)
			j := index[c.Header]
			cells[i][j] = text
			widths[j] = max(widths[j], len([]rune(text)))
		}
	}
	var b strings.Builder
	line := func(fields []string) {
		var l strings.Builder
		for i, f := range fields {
			if i > 0 {
				l.WriteString("  ")
			}
			l.WriteString(f)
			l.WriteString(strings.Repeat(" ", widths[i]-len([]rune(f))))
		}
		b.WriteString(strings.TrimRight(l.String(), " "))
		b.WriteByte('\n')
	}
	line(headers)
	dashes := make([]string, len(headers))
	for i := range headers {
		dashes[i] = strings.Repeat("-", widths[i])
	}
	line(dashes)
	for _, r := range cells {
		line(r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// tableText is a cell's text; a list or object (from a table function)
// shows compactly.
func tableText(v any) string {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = tableText(e)
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return scalarText(v)
}

// field reads a nested field of a generic object ("a.b"), nil when absent.
func field(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// columns returns a table function that makes one row per item of the list
// at listPath ("" for the value itself) with the given columns, each a
// header and a field path.
func columns(listPath string, cols ...[2]string) tableFunc {
	return func(v any) []tableRow {
		if listPath != "" {
			v = field(v, listPath)
		}
		items, ok := v.([]any)
		if !ok {
			items = []any{v}
		}
		var rows []tableRow
		for _, item := range items {
			if item == nil {
				continue
			}
			row := make(tableRow, len(cols))
			for i, c := range cols {
				row[i] = tableCell{Header: c[0], Value: field(item, c[1])}
			}
			rows = append(rows, row)
		}
		return rows
	}
}
