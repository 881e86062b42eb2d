package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flag annotations for az's argument forms that pflag does not parse.
const (
	// annotationOptionalBool: "--flag", "--flag true" and "--flag=false"
	// (az's three-state flags).
	annotationOptionalBool = "sluice_optional_bool"
	// annotationMultiValue: "--flag A B C" takes every word up to the next
	// flag (az's nargs='+'), as in "--repository REPO content/read
	// content/write".
	annotationMultiValue = "sluice_multi_value"
)

// boolWords are the values az accepts for three-state flags.
var boolWords = map[string]bool{"true": true, "false": false, "yes": true, "no": false, "on": true, "off": false, "1": true, "0": false}

// rewriteArgs brings az's command lines to what cobra parses: a leading
// "acr" is dropped (sluice acr repository list = sluice repository list),
// "--flag true" becomes "--flag=true" for three-state flags, and a
// multi-value flag's words become one value separated by spaces.
func rewriteArgs(root *cobra.Command, args []string) []string {
	args = append([]string(nil), args...)
	switch {
	case len(args) > 0 && args[0] == "acr":
		args = args[1:]
	case len(args) > 1 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) && args[1] == "acr":
		args = append(args[:1], args[2:]...)
	}
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil || cmd == root {
		return args
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out = append(out, a)
		if a == "--" {
			out = append(out, args[i+1:]...)
			break
		}
		f := lookupFlag(cmd, a)
		if f == nil {
			continue
		}
		switch {
		case f.Annotations[annotationOptionalBool] != nil && i+1 < len(args):
			// The next word is the flag's value unless it is a flag; a
			// word that is not a boolean then fails as the flag's value,
			// which says more than "unknown command".
			if next := args[i+1]; !strings.HasPrefix(next, "-") {
				out[len(out)-1] = a + "=" + next
				i++
			}
		case f.Annotations[annotationMultiValue] != nil:
			j := i + 1
			for j < len(args) && !strings.HasPrefix(args[j], "-") {
				j++
			}
			if j > i+1 {
				out = append(out, strings.Join(args[i+1:j], " "))
				i = j - 1
			}
		}
	}
	return out
}

// lookupFlag returns the flag a bare "--name" or "-n" token names.
func lookupFlag(cmd *cobra.Command, token string) *pflag.Flag {
	fs := cmd.Flags()
	switch {
	case strings.HasPrefix(token, "--") && !strings.Contains(token, "="):
		return fs.Lookup(token[2:])
	case len(token) == 2 && token[0] == '-' && token[1] != '-':
		return fs.ShorthandLookup(token[1:])
	}
	return nil
}

// noArgs refuses positional arguments, pointing at the flags: az commands
// take their values as flags (--repository team/app, not team/app).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes flags, not arguments (got %q); see '%s --help'", cmd.CommandPath(), args[0], cmd.CommandPath())
	}
	return nil
}

// optionalBool is a three-state flag: unset (nil), true or false.
type optionalBool struct{ p **bool }

func (b optionalBool) Set(s string) error {
	v, ok := boolWords[strings.ToLower(s)]
	if !ok {
		return fmt.Errorf("%q is not true or false", s)
	}
	*b.p = &v
	return nil
}

func (b optionalBool) String() string {
	if b.p == nil || *b.p == nil {
		return ""
	}
	return strconv.FormatBool(**b.p)
}

// Type names the values in help: "--flag true|false[=true]".
func (b optionalBool) Type() string { return "true|false" }

// optionalBoolFlag defines a three-state flag on cmd.
func optionalBoolFlag(cmd *cobra.Command, p **bool, name, usage string) {
	f := cmd.Flags().VarPF(optionalBool{p}, name, "", usage)
	f.NoOptDefVal = "true"
	f.Annotations = map[string][]string{annotationOptionalBool: {"true"}}
}

// multiValueFlag defines a repeatable flag taking several words, az's
// nargs='+' ("--repository REPO ACTION..."): each occurrence is one value,
// its words separated by spaces.
func multiValueFlag(cmd *cobra.Command, p *[]string, name, usage string) {
	cmd.Flags().StringArrayVar(p, name, nil, usage)
	cmd.Flags().Lookup(name).Annotations = map[string][]string{annotationMultiValue: {"true"}}
}
