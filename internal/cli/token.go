package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/client"
)

var tokenTable = columns("", [2]string{"Name", "name"}, [2]string{"ScopeMapId", "scopeMapId"}, [2]string{"Status", "status"},
	[2]string{"CreationDate", "creationDate"})

var passwordsTable = columns("passwords", [2]string{"Name", "name"}, [2]string{"Value", "value"}, [2]string{"Expiry", "expiry"})

// expiryFlags are --expiration (a UTC time) and --expiration-in-days.
type expiryFlags struct {
	expiration string
	days       int
}

func (e *expiryFlags) define(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.expiration, "expiration", "", "when the passwords expire, a UTC time such as 2027-12-31T23:59:59Z (default: never)")
	cmd.Flags().IntVar(&e.days, "expiration-in-days", 0, "expire the passwords after this many days")
	cmd.MarkFlagsMutuallyExclusive("expiration", "expiration-in-days")
}

// value is the expiry as the API takes it ("" for none).
func (e *expiryFlags) value(now time.Time) (string, error) {
	switch {
	case e.days < 0:
		return "", usageErrorf("--expiration-in-days must be positive")
	case e.days > 0:
		return now.UTC().AddDate(0, 0, e.days).Format(time.RFC3339), nil
	case e.expiration == "":
		return "", nil
	}
	t, err := time.Parse(time.RFC3339, e.expiration)
	if err != nil {
		if t, err = time.Parse("2006-01-02", e.expiration); err != nil {
			return "", usageErrorf("--expiration %q: use a UTC time such as 2027-12-31T23:59:59Z", e.expiration)
		}
	}
	return t.UTC().Format(time.RFC3339), nil
}

func (a *App) newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage tokens: credentials bound to a scope map",
		Long: `A token is a user name with two passwords whose permissions come from a
scope map. Give one to each node or pipeline instead of the admin password;
the passwords are shown only when created or regenerated.`,
		Example: `  sluice token create --name node-pull --scope-map _repositories_pull --query credentials.passwords[0].value -o tsv
  sluice token list -o table`,
	}
	cmd.AddCommand(a.newTokenCreateCmd(), a.newTokenListCmd(), a.newTokenShowCmd(), a.newTokenUpdateCmd(),
		a.newTokenDeleteCmd(), a.newTokenCredentialCmd())
	return cmd
}

// tokenName is --name/-n of the token commands.
func tokenName(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "name", "n", "", "the token's name")
	_ = cmd.MarkFlagRequired("name")
}

func (a *App) newTokenCreateCmd() *cobra.Command {
	var name, scopeMap, status string
	var repos []string
	var exp expiryFlags
	cmd := &cobra.Command{
		Use:   "create --name NAME (--scope-map MAP | --repository REPOSITORY ACTION...) [--expiration TIME]",
		Short: "Create a token; its passwords are shown now only",
		Long: `Create makes a token with two passwords. Its permissions come from
--scope-map (a built-in map such as _repositories_pull, _repositories_push,
_repositories_admin, or one made with scope-map create), or from
--repository REPOSITORY ACTION..., which makes a scope map NAME-scope-map.
Actions: content/read, content/write, content/delete, metadata/read,
metadata/write, streaming/write.`,
		Example: `  sluice token create --name node-pull --scope-map _repositories_pull
  PASS=$(sluice token create --name ci --scope-map _repositories_push --query credentials.passwords[0].value -o tsv)
  sluice token create --name team-a --repository team-a/* content/read content/write --expiration-in-days 90`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			expiry, err := exp.value(time.Now())
			if err != nil {
				return err
			}
			if (scopeMap == "") == (len(repos) == 0) {
				return usageErrorf("give --scope-map MAP, or --repository REPOSITORY ACTION... (one of them)")
			}
			reg, err := a.registry()
			if err != nil {
				return err
			}
			cl := a.Client(ctx, reg)
			if len(repos) > 0 {
				actions, err := repositoryActions(repos)
				if err != nil {
					return err
				}
				scopeMap = name + "-scope-map"
				body := map[string]any{"name": scopeMap, "description": "made for the token " + name, "actions": actions}
				if _, _, err := cl.API(ctx, "POST", "/acr/v1/_scopemaps", nil, body); err != nil {
					return fmt.Errorf("creating the scope map %s: %w", scopeMap, err)
				}
			}
			body := map[string]string{"name": name, "scopeMapId": scopeMap, "status": status}
			if expiry != "" {
				body["expiry"] = expiry
			}
			b, _, err := cl.API(ctx, "POST", "/acr/v1/_tokens", nil, body)
			if err != nil {
				return err
			}
			return a.print(json.RawMessage(b), tokenTable)
		},
	}
	tokenName(cmd, &name)
	cmd.Flags().StringVar(&scopeMap, "scope-map", "", "the scope map giving the token its permissions")
	multiValueFlag(cmd, &repos, "repository", "REPOSITORY ACTION...: make a scope map with these actions on the repository (repeatable)")
	cmd.Flags().StringVar(&status, "status", "enabled", "enabled or disabled")
	exp.define(cmd)
	return cmd
}

// repositoryActions turns "--repository REPO ACTION..." values into scope
// map actions (repositories/REPO/ACTION).
func repositoryActions(values []string) ([]string, error) {
	var actions []string
	for _, v := range values {
		words := strings.Fields(v)
		if len(words) < 2 {
			return nil, usageErrorf("--repository %q: give the repository and its actions, e.g. --repository team/app content/read content/write", v)
		}
		for _, act := range words[1:] {
			actions = append(actions, "repositories/"+words[0]+"/"+act)
		}
	}
	return actions, nil
}

func (a *App) newTokenListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the tokens",
		Example: "  sluice token list -o table",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_tokens", nil, "", tokenTable)
		},
	}
	return cmd
}

func (a *App) newTokenShowCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "show --name NAME",
		Short:   "Show a token (without its passwords)",
		Example: "  sluice token show --name node-pull",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_tokens/"+url.PathEscape(name), nil, "", tokenTable)
		},
	}
	tokenName(cmd, &name)
	return cmd
}

func (a *App) newTokenUpdateCmd() *cobra.Command {
	var name, scopeMap, status string
	cmd := &cobra.Command{
		Use:   "update --name NAME [--scope-map MAP] [--status enabled|disabled]",
		Short: "Change a token's scope map or status",
		Example: `  sluice token update --name ci --status disabled
  sluice token update --name ci --scope-map _repositories_pull`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]string{}
			if scopeMap != "" {
				body["scopeMapId"] = scopeMap
			}
			if status != "" {
				body["status"] = status
			}
			if len(body) == 0 {
				return usageErrorf("give --scope-map or --status to change")
			}
			return a.call(cmd.Context(), "PATCH", "/acr/v1/_tokens/"+url.PathEscape(name), body, "", tokenTable)
		},
	}
	tokenName(cmd, &name)
	cmd.Flags().StringVar(&scopeMap, "scope-map", "", "the new scope map")
	cmd.Flags().StringVar(&status, "status", "", "enabled or disabled")
	return cmd
}

func (a *App) newTokenDeleteCmd() *cobra.Command {
	var name string
	var yes bool
	cmd := &cobra.Command{
		Use:     "delete --name NAME [--yes]",
		Short:   "Delete a token; its passwords stop working",
		Example: "  sluice token delete --name ci --yes",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.confirm(yes, "Delete the token "+name+"?"); err != nil {
				return err
			}
			return a.call(cmd.Context(), "DELETE", "/acr/v1/_tokens/"+url.PathEscape(name), nil, "", nil)
		},
	}
	tokenName(cmd, &name)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (a *App) newTokenCredentialCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "credential",
		Short:   "Regenerate a token's passwords",
		Example: "  sluice token credential generate --name ci --password2",
	}
	var name string
	var p1, p2 bool
	var exp expiryFlags
	gen := &cobra.Command{
		Use:   "generate --name NAME [--password1] [--password2] [--expiration TIME]",
		Short: "Regenerate password1, password2 or both (the old ones stop working)",
		Long: `Generate makes new passwords for a token, both unless --password1 or
--password2 picks one, and shows them now only. The output is
{username, passwords}, as az prints it.`,
		Example: `  sluice token credential generate --name ci --password1 --query passwords[0].value -o tsv
  sluice token credential generate --name ci --expiration-in-days 30`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			expiry, err := exp.value(time.Now())
			if err != nil {
				return err
			}
			body := map[string]any{}
			var names []string
			if p1 {
				names = append(names, "password1")
			}
			if p2 {
				names = append(names, "password2")
			}
			if len(names) > 0 {
				body["passwords"] = names
			}
			if expiry != "" {
				body["expiry"] = expiry
			}
			reg, err := a.registry()
			if err != nil {
				return err
			}
			return a.generateCredentials(ctx, a.Client(ctx, reg), name, body)
		},
	}
	tokenName(gen, &name)
	gen.Flags().BoolVar(&p1, "password1", false, "regenerate password1")
	gen.Flags().BoolVar(&p2, "password2", false, "regenerate password2")
	exp.define(gen)
	cmd.AddCommand(gen)
	return cmd
}

// generateCredentials regenerates passwords and prints {username,
// passwords} with only the regenerated ones (those that have a value).
func (a *App) generateCredentials(ctx context.Context, cl *client.Client, name string, body map[string]any) error {
	b, _, err := cl.API(ctx, "POST", "/acr/v1/_tokens/"+url.PathEscape(name)+"/_credentials", nil, body)
	if err != nil {
		return err
	}
	var tok struct {
		Credentials struct {
			Username  string           `json:"username"`
			Passwords []map[string]any `json:"passwords"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal(b, &tok); err != nil {
		return err
	}
	out := map[string]any{"username": tok.Credentials.Username, "passwords": []map[string]any{}}
	var shown []map[string]any
	for _, p := range tok.Credentials.Passwords {
		if v, _ := p["value"].(string); v != "" {
			shown = append(shown, p)
		}
	}
	if shown != nil {
		out["passwords"] = shown
	}
	return a.print(out, passwordsTable)
}
