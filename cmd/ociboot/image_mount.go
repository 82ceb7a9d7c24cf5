package main

import (
	"fmt"

	"github.com/ociboot/ociboot/composefs"
	"github.com/spf13/cobra"
)

func newImageMountCmd(g *globalOptions) *cobra.Command {
	var verity bool
	cmd := &cobra.Command{
		Use:   "mount IMAGE MOUNTPOINT",
		Short: "Mount a pulled image read-only, as it will boot",
		Long: `Mount the composefs image of IMAGE (as pulled, or its manifest digest) read-only at
MOUNTPOINT over the sysroot's object store. With --verity every file's fs-verity digest
is checked when opened (overlayfs verity=require), as at boot; that needs a kernel and
filesystem with fs-verity.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := g.openRepo()
			if err != nil {
				return err
			}
			defer repo.Close()
			img, err := repo.Lookup(args[0])
			if err != nil {
				return err
			}
			mode := composefs.VerityOff
			if verity {
				mode = composefs.VerityRequire
			}
			err = composefs.Mount(cmd.Context(), repo.ImagePath(img.ComposefsDigest), repo.Store().Dir(), args[1], composefs.WithVerity(mode))
			if err != nil {
				return fmt.Errorf("mounting %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&verity, "verity", false, "require fs-verity on every object (overlay verity=require)")
	return cmd
}

func newImageUnmountCmd() *cobra.Command {
	cmd := newCfsUnmountCmd()
	cmd.Short = "Unmount an image mounted with 'image mount'"
	return cmd
}
