package cli

import (
	"net/url"

	"github.com/spf13/cobra"
)

var scopeMapTable = columns("", [2]string{"Name", "name"}, [2]string{"Type", "type"}, [2]string{"Description", "description"},
	[2]string{"Actions", "actions"})

func (a *App) newScopeMapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scope-map",
		Short: "Manage scope maps: the permissions tokens are bound to",
		Long: `A scope map lists actions on repositories: content/read (pull),
content/write (push), content/delete, metadata/read (list and show) and
metadata/write (attributes and streaming settings), and streaming/write
(push streaming artifacts, which nodes mount in place of an image's layers;
only _repositories_admin among the built-in maps has it). A repository is
an exact name, a prefix such as team-a/*, or * for all. Built in:
_repositories_pull, _repositories_pull_metadata_read, _repositories_push,
_repositories_push_metadata_write, _repositories_admin.`,
		Example: `  sluice scope-map create --name team-a-devs --repository team-a/* content/read content/write
  sluice scope-map list -o table`,
	}
	cmd.AddCommand(a.newScopeMapCreateCmd(), a.newScopeMapListCmd(), a.newScopeMapShowCmd(), a.newScopeMapUpdateCmd(), a.newScopeMapDeleteCmd())
	return cmd
}

func scopeMapName(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "name", "n", "", "the scope map's name")
	_ = cmd.MarkFlagRequired("name")
}

func (a *App) newScopeMapCreateCmd() *cobra.Command {
	var name, description string
	var repos []string
	cmd := &cobra.Command{
		Use:   "create --name NAME --repository REPOSITORY ACTION... [--description TEXT]",
		Short: "Create a scope map",
		Example: `  sluice scope-map create --name team-a-devs --repository team-a/* content/read content/write
  sluice scope-map create --name ci --repository app content/read content/write --repository base content/read`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			actions, err := repositoryActions(repos)
			if err != nil {
				return err
			}
			if len(actions) == 0 {
				return usageErrorf("give the permissions: --repository REPOSITORY ACTION...")
			}
			body := map[string]any{"name": name, "description": description, "actions": actions}
			return a.call(cmd.Context(), "POST", "/acr/v1/_scopemaps", body, "", scopeMapTable)
		},
	}
	scopeMapName(cmd, &name)
	cmd.Flags().StringVar(&description, "description", "", "what the scope map is for")
	multiValueFlag(cmd, &repos, "repository", "REPOSITORY ACTION...: actions on a repository or pattern (repeatable)")
	return cmd
}

func (a *App) newScopeMapListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the scope maps, built-in ones included",
		Example: "  sluice scope-map list -o table",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_scopemaps", nil, "", scopeMapTable)
		},
	}
}

func (a *App) newScopeMapShowCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:     "show --name NAME",
		Short:   "Show a scope map",
		Example: "  sluice scope-map show --name _repositories_pull --query actions",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd.Context(), "GET", "/acr/v1/_scopemaps/"+url.PathEscape(name), nil, "", scopeMapTable)
		},
	}
	scopeMapName(cmd, &name)
	return cmd
}

func (a *App) newScopeMapUpdateCmd() *cobra.Command {
	var name, description string
	var add, remove []string
	cmd := &cobra.Command{
		Use:   "update --name NAME [--add-repository REPOSITORY ACTION...] [--remove-repository REPOSITORY ACTION...] [--description TEXT]",
		Short: "Add or remove a scope map's actions",
		Example: `  sluice scope-map update --name team-a-devs --add-repository team-a/* content/delete
  sluice scope-map update --name team-a-devs --remove-repository team-a/* content/write`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addActions, err := repositoryActions(add)
			if err != nil {
				return err
			}
			removeActions, err := repositoryActions(remove)
			if err != nil {
				return err
			}
			body := map[string]any{}
			if len(addActions) > 0 {
				body["addActions"] = addActions
			}
			if len(removeActions) > 0 {
				body["removeActions"] = removeActions
			}
			if cmd.Flags().Changed("description") {
				body["description"] = description
			}
			if len(body) == 0 {
				return usageErrorf("give --add-repository, --remove-repository or --description")
			}
			return a.call(cmd.Context(), "PATCH", "/acr/v1/_scopemaps/"+url.PathEscape(name), body, "", scopeMapTable)
		},
	}
	scopeMapName(cmd, &name)
	cmd.Flags().StringVar(&description, "description", "", "a new description")
	multiValueFlag(cmd, &add, "add-repository", "REPOSITORY ACTION...: actions to add (repeatable)")
	multiValueFlag(cmd, &remove, "remove-repository", "REPOSITORY ACTION...: actions to remove (repeatable)")
	return cmd
}

func (a *App) newScopeMapDeleteCmd() *cobra.Command {
	var name string
	var yes bool
	cmd := &cobra.Command{
		Use:     "delete --name NAME [--yes]",
		Short:   "Delete a scope map no token uses",
		Example: "  sluice scope-map delete --name team-a-devs --yes",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.confirm(yes, "Delete the scope map "+name+"?"); err != nil {
				return err
			}
			return a.call(cmd.Context(), "DELETE", "/acr/v1/_scopemaps/"+url.PathEscape(name), nil, "", nil)
		},
	}
	scopeMapName(cmd, &name)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
