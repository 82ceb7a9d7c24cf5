package main

import (
	"fmt"

	"github.com/ociboot/ociboot/composefs"
	"github.com/spf13/cobra"
)

func newCfsMountCmd() *cobra.Command {
	var basedir, digest string
	var verity bool
	cmd := &cobra.Command{
		Use:   "mount --basedir OBJECTS [--verity] [--digest DIGEST] IMAGE MOUNTPOINT",
		Short: "Mount a composefs image read-only over its object store (like mount.composefs)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if basedir == "" {
				return fmt.Errorf("--basedir is required: the object store the image's files point into")
			}
			opts := []composefs.MountOption{composefs.WithVerity(composefs.VerityOff)}
			if verity {
				opts[0] = composefs.WithVerity(composefs.VerityRequire)
			}
			if digest != "" {
				d, err := composefs.ParseDigest(digest)
				if err != nil {
					return fmt.Errorf("--digest: %w", err)
				}
				opts = append(opts, composefs.WithImageDigest(d))
			}
			return composefs.Mount(cmd.Context(), args[0], basedir, args[1], opts...)
		},
	}
	cmd.Flags().StringVar(&basedir, "basedir", "", "the object store holding the image's file contents")
	cmd.Flags().BoolVar(&verity, "verity", false, "require every object's fs-verity digest to match the image (overlay verity=require)")
	cmd.Flags().StringVar(&digest, "digest", "", "refuse the image unless its own fs-verity digest is this")
	return cmd
}

func newCfsUnmountCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unmount MOUNTPOINT",
		Short: "Unmount a composefs mount",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return composefs.Unmount(args[0])
		},
	}
}
