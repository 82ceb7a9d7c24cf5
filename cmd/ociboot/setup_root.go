package main

import (
	"fmt"
	"os"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

// initrdSysroot is where an initramfs mounts the physical root before switching into it.
const initrdSysroot = "/sysroot"

func newSetupRootCmd(g *globalOptions) *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "setup-root",
		Short: "Mount the deployment the kernel command line names as the new root (in the initramfs)",
		Long: `Run in the initramfs, after the root partition is mounted at /sysroot and before the
switch to the real init (ociboot-setup-root.service, dracut module 51ociboot). It reads
composefs=<digest> from the kernel command line (composefs=?<digest>: fs-verity optional),
mounts the composefs image /sysroot/composefs/images/<digest> over the object store
/sysroot/composefs/objects (verity=require unless optional; the image's own digest checked
first), read-only, stacked on /sysroot, and attaches the deployment's writable /etc
(state/deploy/<digest>/etc), the shared /var (state/os/default/var) and the physical root
(at /sysroot inside the new root). Then:

    ociboot setup-root && exec switch_root /sysroot /sbin/init

A command line with no or several composefs= arguments, a missing image, object store or
state, or an image that is not the one named stops with a message naming it and a non-zero
exit, with nothing left mounted. --sysroot defaults to /sysroot here; --target mounts the
deployment at another directory instead (for tests).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sysroot := g.sysroot
			if !cmd.Flags().Changed("sysroot") {
				sysroot = initrdSysroot
			}
			cmdline, err := os.ReadFile(g.cmdline)
			if err != nil {
				return fmt.Errorf("reading the kernel command line: %w", err)
			}
			res, err := deploy.SetupRoot(cmd.Context(), deploy.SetupRootConfig{
				Sysroot: sysroot, Cmdline: cmdline, CmdlineSource: g.cmdline, Target: target,
			})
			if err != nil {
				return fmt.Errorf("setting up the root: %w", err)
			}
			verity := "fs-verity required"
			if res.VerityOptional {
				verity = "fs-verity optional"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Mounted deployment %s at %s (%s).\n", res.ID, res.Target, verity)
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "mount the deployment here instead of over --sysroot")
	return cmd
}
