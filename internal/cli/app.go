// Package cli is the sluice command-line client: the az acr-style commands
// for a Sluice registry (import, artifact streaming, repositories,
// manifests, tags, tokens, scope maps, usage, the legacy Teleport check),
// login and configuration, client-side conversion for any OCI registry,
// and the az output conventions (-o json|jsonc|table|tsv|yaml|none,
// --query JMESPath). Commands talk to registries through internal/client.
// cmd/sluice wires it up; this package has no global state, so tests run
// it in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/lazypull"
)

// App is one run of sluice: its streams, environment and flags.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
	// Transport carries every HTTP request; nil means a retrying default.
	Transport http.RoundTripper
	// Terminal reports whether a stream is a terminal (by default: an
	// *os.File that is a TTY).
	Terminal func(any) bool

	flags globalFlags
	conf  *userConfig
	out   *output
	// normalize rewrites results before they are printed, and record sees
	// them: golden tests use them to make volatile values (times, ids)
	// stable and to print one result in every format.
	normalize func(any) any
	record    func(v any, table tableFunc)
	// pull pulls through containerd (lazypull.Pull when nil); golden
	// tests, which have no containerd, give a stand-in.
	pull func(ctx context.Context, ref string, o lazypull.Options) (*lazypull.Result, error)
	// sentCredentials: a registry client had credentials, so a refusal
	// for lack of permission is not for want of a login.
	sentCredentials bool
}

// globalFlags are the flags every command has, and the registry name that
// commands naming the registry with --name/-n set.
type globalFlags struct {
	output, query    string
	registry         string
	registryName     string
	debug, onlyError bool
}

// NewApp returns an App on the process's standard streams.
func NewApp() *App {
	return &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

func (a *App) getenv(k string) string {
	if a.Getenv != nil {
		return a.Getenv(k)
	}
	return os.Getenv(k)
}

func (a *App) terminal(s any) bool {
	if a.Terminal != nil {
		return a.Terminal(s)
	}
	f, ok := s.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// interactive reports whether progress and hints go to stderr: only on a
// terminal, so that a script's output is nothing but the result.
func (a *App) interactive() bool { return !a.flags.onlyError && a.terminal(a.Stderr) }

// hint writes a note for the user on stderr, when stderr is a terminal.
func (a *App) hint(format string, args ...any) {
	if a.interactive() {
		fmt.Fprintf(a.Stderr, format+"\n", args...)
	}
}

// warn writes a warning on stderr (unless --only-show-errors).
func (a *App) warn(format string, args ...any) {
	if !a.flags.onlyError {
		fmt.Fprintf(a.Stderr, "WARNING: "+format+"\n", args...)
	}
}

// NewRootCommand returns the root command with every command of this
// package; extra adds commands defined elsewhere (cmd/sluice's).
func NewRootCommand(a *App, extra ...func(*App) *cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Sluice: a container registry with artifact streaming",
		Long: `sluice manages a Sluice registry with the commands of az acr: every
command also accepts a leading "acr", so a setup guide's commands run
verbatim with 'alias az=sluice'.

Start with:
  sluice login myregistry --url http://127.0.0.1:5000 -u admin -p PASSWORD
  sluice config set defaults.acr=myregistry
  sluice repository list`,
		Example:       "  sluice repository list -o table\n  sluice acr artifact-streaming create --image team/app:1.0",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.prepareOutput(cmd)
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = false
	pf := root.PersistentFlags()
	pf.StringVarP(&a.flags.output, "output", "o", "", "output format: json, jsonc, table, tsv, yaml, yamlc or none (default json, or core.output)")
	pf.StringVar(&a.flags.query, "query", "", "JMESPath query applied to the result, e.g. credentials.passwords[0].value")
	pf.StringVarP(&a.flags.registry, "registry", "r", "", "registry: a name configured with 'sluice login', or host[:port] or a URL (default: defaults.acr)")
	pf.BoolVar(&a.flags.debug, "debug", false, "log every HTTP request to stderr")
	pf.BoolVar(&a.flags.onlyError, "only-show-errors", false, "print no warnings or progress")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("registry", a.completeRegistries)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	root.AddCommand(
		a.newLoginCmd(), a.newLogoutCmd(), a.newConfigCmd(), a.newConfigureCmd(),
		a.newImportCmd(), a.newStreamingCmd(),
		a.newRepositoryCmd(), a.newTagCmd(), a.newManifestCmd(),
		a.newTokenCmd(), a.newScopeMapCmd(), a.newShowUsageCmd(), a.newTeleportCmd(),
		a.newConvertCmd(),
	)
	for _, f := range extra {
		root.AddCommand(f(a))
	}
	return root
}

// prepareOutput settles the output format: -o, else core.output, else json.
func (a *App) prepareOutput(cmd *cobra.Command) error {
	format := a.flags.output
	if format == "" {
		format = a.getenv("SLUICE_OUTPUT")
	}
	if format == "" {
		if c, err := a.config(); err == nil {
			format = c.Core["output"]
		}
	}
	if format == "" {
		format = "json"
	}
	out, err := newOutput(format, a.flags.query, a.terminal(a.Stdout))
	if err != nil {
		return err
	}
	a.out = out
	return nil
}

// print writes a command's result in the chosen output format; table
// shapes it for -o table (nil: az's automatic table).
func (a *App) print(v any, table tableFunc) error {
	g, err := generic(v)
	if err != nil {
		return err
	}
	if a.normalize != nil {
		g = a.normalize(g)
	}
	if a.record != nil {
		a.record(g, table)
	}
	if a.out == nil {
		a.out = &output{format: "json"}
	}
	return a.out.write(a.Stdout, g, table)
}

// Exit codes, as az's: 1 for an error, 2 for a usage error, 3 when what was
// asked for does not exist, 130 when interrupted.
const (
	ExitError       = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitInterrupted = 130
)

// usageError is a mistake on the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// explainedError says in its own words what err (kept for the exit code)
// means, when the registry's text would only repeat it.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// errInterrupted stops a command on Ctrl-C after it said what to do next.
var errInterrupted = errors.New("interrupted")

// Execute runs root with args, prints any error on a.Stderr and returns
// the process's exit code.
func Execute(ctx context.Context, a *App, root *cobra.Command, args []string) int {
	root.SetArgs(rewriteArgs(root, args))
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	if code != ExitInterrupted {
		fmt.Fprintln(a.Stderr, "ERROR: "+a.errorText(err))
	}
	if code == ExitUsage && !strings.Contains(err.Error(), "--help") {
		fmt.Fprintln(a.Stderr, "See 'sluice --help' or add --help to a command.")
	}
	return code
}

func exitCode(err error) int {
	var ue *usageError
	var ce *client.Error
	switch {
	case errors.Is(err, errInterrupted) || errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ue) || isCobraUsage(err):
		return ExitUsage
	case errors.As(err, &ce) && ce.Status == http.StatusNotFound, errors.As(err, new(*notSetError)):
		return ExitNotFound
	}
	return ExitError
}

// isCobraUsage recognizes cobra's own command-line errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "received ", "required flag",
		"invalid argument", "unknown flag", "unknown shorthand flag", "flag needs an argument", "if any flags in the group",
		"at least one of the flags in the group", "none of the others"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// errorText explains an error: a registry's refusal of a permission the
// credentials lack says what is not allowed and how an admin grants it;
// its refusal of the credentials, or of a caller without any, gets a hint
// on logging in.
func (a *App) errorText(err error) string {
	if missing := client.MissingAccess(err); len(missing) > 0 && a.sentCredentials {
		return err.Error() + "\n" + notAllowed(missing)
	}
	status := 0
	var ce *client.Error
	var oe *errcode.ErrorResponse
	switch {
	case errors.As(err, &ce):
		status = ce.Status
	case errors.As(err, &oe):
		// oras-go's, from a token service or a registry.
		status = oe.StatusCode
	}
	switch status {
	case http.StatusUnauthorized:
		return err.Error() + "\n" + notLoggedIn
	case http.StatusForbidden:
		return err.Error() + "\nThe credentials are valid but lack the permission; an admin can grant it with a scope map."
	}
	return err.Error()
}

// notLoggedIn is the hint for a refusal of the caller's credentials, or
// of a caller without any.
const notLoggedIn = "Not logged in, or the credentials were refused: sluice login NAME --url URL -u USER -p PASSWORD (or set $SLUICE_USERNAME and $SLUICE_PASSWORD)."

// repositoryDeeds words each repository action of a token scope, with the
// scope map action that grants it, as the registry's refusals do.
var repositoryDeeds = map[string]struct{ verb, grantedBy string }{
	"pull":            {"pull from", "content/read"},
	"push":            {"push to", "content/write"},
	"delete":          {"delete from", "content/delete"},
	"metadata_read":   {"read the metadata of", "metadata/read"},
	"metadata_write":  {"change the metadata of", "metadata/write"},
	"streaming_write": {"push streaming artifacts to", "streaming/write"},
}

// notAllowed says what the credentials may not do, given the token scopes
// they lack ("repository:team/app:pull"), and how an admin grants it:
// "Not allowed to pull from team/app.", then the sluice scope-map update
// that adds content/read on team/app.
func notAllowed(missing []string) string {
	var deeds, grants []string
	adminOnly := false
	for _, scope := range missing {
		typ, rest, _ := strings.Cut(scope, ":")
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		for _, act := range actions {
			d, ok := repositoryDeeds[act]
			switch {
			case typ == "registry" && name == "admin":
				deeds, adminOnly = append(deeds, "manage the registry"), true
			case typ == "registry" && name == "catalog":
				deeds = append(deeds, "list the repositories")
			case typ == "repository" && ok:
				deeds = append(deeds, d.verb+" "+name)
				grants = append(grants, "--add-repository "+name+" "+d.grantedBy)
			default:
				deeds = append(deeds, "use "+typ+":"+name+":"+act)
			}
		}
	}
	msg := "Not allowed to " + strings.Join(deeds, ", nor ") + "."
	switch {
	case len(grants) > 0:
		msg += "\nAn admin can grant it in the token's scope map: sluice scope-map update --name SCOPE_MAP " + strings.Join(grants, " ")
	case adminOnly:
		msg += " Only the admin user may."
	default:
		msg += " The credentials are valid but lack the permission."
	}
	return msg
}

// completeRegistries completes --registry with the configured names.
func (a *App) completeRegistries(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	c, err := a.config()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, r := range c.Registries {
		names = append(names, r.Name+"\t"+r.URL)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
