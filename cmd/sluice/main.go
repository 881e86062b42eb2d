// Command sluice is the Sluice command-line client: the az acr-style
// commands for a Sluice registry, login and configuration, and client-side
// conversion to the streaming format. The commands live in internal/cli;
// this file wires them to the process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/cli"
)

// localCommands are the commands defined in this package, added to the
// root beside internal/cli's. A file of this package registers its command
// from an init function:
//
//	func init() { localCommands = append(localCommands, newPullCmd) }
var localCommands []func(*cli.App) *cobra.Command

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := cli.NewApp()
	code := cli.Execute(ctx, app, newRootCmd(app), os.Args[1:])
	stop()
	os.Exit(code)
}

// newRootCmd is the whole command tree.
func newRootCmd(app *cli.App) *cobra.Command {
	return cli.NewRootCommand(app, localCommands...)
}
