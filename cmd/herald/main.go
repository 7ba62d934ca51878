// Command herald runs Herald, the WhatsApp-first customer-engagement
// pipeline. One binary, one subcommand per stage; `herald dev` runs them all
// in one process on embedded defaults. `herald help` lists the subcommands.
package main

import (
	"os"

	"github.com/heraldhq/herald/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
