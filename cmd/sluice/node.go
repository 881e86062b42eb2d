package main

import "github.com/sluicehq/sluice/internal/cli"

func init() { localCommands = append(localCommands, cli.NewNodeCommand) }
