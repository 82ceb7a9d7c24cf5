package main

import (
	"path/filepath"

	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

// newImageCmd groups what podman's image verbs do, on the sysroot's composefs store.
func newImageCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Pull, list, mount and remove OS images in the sysroot's store",
		RunE:  groupRunE,
	}
	cmd.AddCommand(
		newImagePullCmd(g),
		newImageListCmd(g),
		newImageMountCmd(g),
		newImageUnmountCmd(),
		newImageRmCmd(g),
	)
	return cmd
}

// openRepo opens the composefs repository of the sysroot (DESIGN.md: composefs/ at the
// top of the physical root).
func (g *globalOptions) openRepo() (*oci.Repo, error) {
	root, err := g.physicalRoot()
	if err != nil {
		return nil, err
	}
	return oci.OpenRepo(filepath.Join(root, "composefs"))
}
