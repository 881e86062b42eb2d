package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func (a *App) newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and change the CLI's settings (defaults.acr, core.output)",
		Long: `The settings live in the user's configuration file ($SLUICE_CONFIG, else
$XDG_CONFIG_HOME/sluice/config.yaml, else ~/.config/sluice/config.yaml).

  defaults.acr       the registry used when a command names none
  defaults.registry  the same (wins over defaults.acr when both are set)
  core.output        the default output format`,
		Example: "  sluice config set defaults.acr=myregistry\n  sluice config get defaults.acr",
	}
	set := &cobra.Command{
		Use:     "set KEY=VALUE...",
		Short:   "Set settings",
		Example: "  sluice config set defaults.acr=myregistry core.output=table",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.setConfig(args)
		},
	}
	get := &cobra.Command{
		Use:   "get [KEY]",
		Short: "Show settings (all of them, a section, or one key)",
		Example: `  sluice config get
  sluice config get defaults
  sluice config get defaults.acr --query value -o tsv`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := ""
			if len(args) == 1 {
				key = args[0]
			}
			return a.getConfig(key)
		},
	}
	unset := &cobra.Command{
		Use:     "unset KEY...",
		Short:   "Remove settings",
		Example: "  sluice config unset defaults.acr",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.config()
			if err != nil {
				return err
			}
			for _, k := range args {
				if err := c.set(k, ""); err != nil {
					return err
				}
			}
			return c.save()
		},
	}
	cmd.AddCommand(set, get, unset)
	return cmd
}

func (a *App) setConfig(pairs []string) error {
	c, err := a.config()
	if err != nil {
		return err
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || v == "" {
			return usageErrorf("%q: use KEY=VALUE, e.g. defaults.acr=myregistry", p)
		}
		if err := c.set(k, v); err != nil {
			return err
		}
		if strings.HasPrefix(k, "defaults.") && c.lookupRegistry(v) == nil {
			if _, err := parseRegistryURL(v); err != nil || !strings.ContainsAny(v, ".:") {
				a.warn("no registry named %q is configured yet; log in with 'sluice login %s --url URL -u USER -p PASSWORD'", v, v)
			}
		}
	}
	return c.save()
}

// getConfig prints settings the way az config get does: sections of
// {name, source, value}; the registries logged in to are a section too.
func (a *App) getConfig(key string) error {
	c, err := a.config()
	if err != nil {
		return err
	}
	entry := func(name, value string) map[string]any {
		return map[string]any{"name": name, "source": c.path, "value": value}
	}
	sections := map[string][]map[string]any{}
	for _, s := range []struct {
		name string
		m    map[string]string
	}{{"defaults", c.Defaults}, {"core", c.Core}} {
		for _, k := range sortedStringKeys(s.m) {
			sections[s.name] = append(sections[s.name], entry(k, s.m[k]))
		}
	}
	for _, r := range c.Registries {
		sections["registries"] = append(sections["registries"], entry(r.Name, r.URL))
	}
	if key == "" {
		return a.print(sections, configTable)
	}
	section, name, hasName := strings.Cut(key, ".")
	items, ok := sections[section]
	if !hasName {
		if !ok {
			return &notSetError{key}
		}
		return a.print(items, nil)
	}
	for _, it := range items {
		if it["name"] == name {
			return a.print(it, nil)
		}
	}
	return &notSetError{key}
}

// configTable shows config get's sections as rows.
func configTable(v any) []tableRow {
	sections, _ := v.(map[string]any)
	var rows []tableRow
	for _, s := range sortedKeys(sections) {
		items, _ := sections[s].([]any)
		for _, it := range items {
			rows = append(rows, tableRow{{"Section", s}, {"Name", field(it, "name")}, {"Value", field(it, "value")}, {"Source", field(it, "source")}})
		}
	}
	return rows
}

// notSetError is a configuration key that has no value (exit code 3).
type notSetError struct{ key string }

func (e *notSetError) Error() string { return fmt.Sprintf("configuration key %q is not set", e.key) }

func sortedStringKeys(m map[string]string) []string {
	g := make(map[string]any, len(m))
	for k := range m {
		g[k] = nil
	}
	return sortedKeys(g)
}

// newConfigureCmd is az's older form: az configure --defaults acr=NAME.
func (a *App) newConfigureCmd() *cobra.Command {
	var defaults []string
	cmd := &cobra.Command{
		Use:     "configure --defaults KEY=VALUE...",
		Short:   "Set defaults the way 'az configure --defaults acr=NAME' does",
		Example: "  sluice configure --defaults acr=myregistry",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(defaults) == 0 {
				return usageErrorf("give --defaults KEY=VALUE, e.g. --defaults acr=myregistry")
			}
			var pairs []string
			for _, d := range defaults {
				for _, p := range strings.Fields(d) {
					pairs = append(pairs, "defaults."+p)
				}
			}
			return a.setConfig(pairs)
		},
	}
	multiValueFlag(cmd, &defaults, "defaults", "KEY=VALUE pairs of the defaults section, e.g. acr=myregistry")
	return cmd
}
