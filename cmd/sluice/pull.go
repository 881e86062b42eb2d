package main

import "github.com/sluicehq/sluice/internal/cli"

// sluice pull lives with the node tools: it needs containerd's client.
func init() { localCommands = append(localCommands, cli.NewPullCommand) }
