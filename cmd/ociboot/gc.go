package main

import (
	"fmt"
	"strings"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

// gcKinds orders and names the kinds of item gc reports: singular, plural.
var gcKinds = []struct{ kind, one, many string }{
	{deploy.GCState, "deployment state", "deployment states"},
	{deploy.GCBootFiles, "boot files directory", "boot files directories"},
	{oci.GCRef, "reference", "references"},
	{oci.GCLayer, "layer record", "layer records"},
	{oci.GCManifest, "manifest", "manifests"},
	{oci.GCConfig, "config", "configs"},
	{oci.GCImage, "composefs image", "composefs images"},
	{oci.GCObject, "object", "objects"},
	{oci.GCTemp, "temporary file", "temporary files"},
}

func newGCCmd(g *globalOptions) *cobra.Command {
	lf := &lockFlags{}
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove what no deployment and no image in the store needs",
		Long: `Remove composefs images, objects, layer records, manifests, configs, deployment state
and boot files that neither a boot entry's deployment nor an image in the store (as
'ociboot image list' shows them) needs, and what interrupted writes left behind. An
image stays in the store until 'ociboot image rm'; a deployment stays while a boot
entry names it. With --dry-run, list what would go and remove nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withLockedSysroot(cmd.Context(), "gc", lf, func(s *deploy.Sysroot) error {
				rep, err := s.GC(cmd.Context(), dryRun)
				if rep != nil {
					printGC(cmd, rep)
				}
				return err
			})
		},
	}
	lf.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, and remove nothing")
	return cmd
}

func printGC(cmd *cobra.Command, rep *deploy.GCReport) {
	out := cmd.OutOrStdout()
	if rep.DryRun {
		for _, it := range rep.Removed {
			fmt.Fprintf(out, "Would remove %s %s (%s)\n", it.Kind, it.Path, humanBytes(it.Size))
		}
	}
	if rep.Count("") == 0 {
		fmt.Fprintln(out, "Nothing to remove.")
		return
	}
	var parts []string
	for _, k := range gcKinds {
		if n := rep.Count(k.kind); n == 1 {
			parts = append(parts, "1 "+k.one)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k.many))
		}
	}
	verb, freed := "Removed", "freed"
	if rep.DryRun {
		verb, freed = "Would remove", "to free"
	}
	fmt.Fprintf(out, "%s %s; %s %s.\n", verb, strings.Join(parts, ", "), humanBytes(rep.Bytes()), freed)
}

// humanBytes writes n in binary units, as du -h does.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
