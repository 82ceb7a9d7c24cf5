package main

import (
	"fmt"
	"os"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newStatusCmd(g *globalOptions) *cobra.Command {
	var format string
	var formatVersion int
	var booted, asJSON, verbose bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the deployments, as bootc status does",
		Long: `Print the host's state as bootc's org.containers.bootc/v1 BootcHost document: human
readable on a terminal, YAML otherwise (--format yaml|json|humanreadable).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if formatVersion != 1 && formatVersion != 0 {
				return fmt.Errorf("--format-version %d: only 1 is supported", formatVersion)
			}
			if asJSON {
				format = "json"
			}
			if format == "" {
				format = "yaml"
				if isTerminal(cmd.OutOrStdout()) {
					format = "humanreadable"
				}
			}
			s, err := g.openSysroot()
			if err != nil {
				return err
			}
			defer s.Close()
			h, trials, err := s.StatusWithTrials(cmd.Context())
			if err != nil {
				return err
			}
			if booted {
				h.FilterToSlot(deploy.SlotBooted)
			}
			out := cmd.OutOrStdout()
			switch format {
			case "yaml":
				return h.WriteYAML(out)
			case "json":
				if err := h.WriteJSON(out); err != nil {
					return err
				}
				_, err := fmt.Fprintln(out)
				return err
			case "humanreadable":
				return h.WriteHuman(out, deploy.HumanOptions{Verbose: verbose, BootTrials: trials})
			}
			return fmt.Errorf("--format %q: want humanreadable, yaml or json", format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "", "humanreadable, yaml or json (default: humanreadable on a terminal, else yaml)")
	f.IntVar(&formatVersion, "format-version", 1, "the document's version (only 1)")
	f.BoolVar(&booted, "booted", false, "show only the booted deployment")
	f.BoolVar(&asJSON, "json", false, "same as --format json")
	f.BoolVarP(&verbose, "verbose", "v", false, "more detail in the human-readable form")
	return cmd
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
