package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

// installFlags are the flags install to-disk and to-filesystem share.
type installFlags struct {
	pf                   pullFlags
	source               string
	addKargs, deleteKarg []string
}

func (f *installFlags) register(cmd *cobra.Command) {
	f.pf.register(cmd)
	// The transport comes from --source-imgref's prefix (docker://, oci:, ...).
	_ = cmd.Flags().MarkHidden("transport")
	cmd.Flags().StringVar(&f.source, "source-imgref", "", "the image to install: a registry reference, or docker://, oci:, oci-archive:, containers-storage:, dir:")
	cmd.Flags().StringArrayVar(&f.addKargs, "karg", nil, "add a kernel argument (repeatable)")
	cmd.Flags().StringArrayVar(&f.deleteKarg, "karg-delete", nil, "remove a kernel argument the image's kargs.d gives: KEY, or KEY=VALUE (repeatable)")
	_ = cmd.MarkFlagRequired("source-imgref")
}

func newInstallCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install an image to a disk or a filesystem (as bootc install)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newInstallToFilesystemCmd(g), newInstallToDiskCmd(g))
	return cmd
}

func newInstallToFilesystemCmd(g *globalOptions) *cobra.Command {
	f := &installFlags{}
	cmd := &cobra.Command{
		Use:   "to-filesystem [flags] --source-imgref IMAGE ROOT",
		Short: "Install an image into a mounted, empty filesystem",
		Long: `Make the sysroot layout in ROOT (an empty directory or filesystem, lost+found allowed),
pull IMAGE into it and make its first deployment the default, with the image's kargs.d
plus --karg minus --karg-delete. The image's /var becomes the initial /var. systemd-boot
is installed from the image's /usr/lib/systemd/boot/efi/systemd-bootx64.efi into
ROOT/boot (EFI/BOOT/BOOTX64.EFI and loader/loader.conf); ROOT/boot is the boot partition
(the ESP), mounted there or copied to it. An image without systemd-boot is installed
with a warning and no boot loader.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := deploy.CheckInstallRoot(args[0]); err != nil {
				return err
			}
			err := installToFilesystem(cmd, g, f, args[0], nil)
			if errors.Is(err, deploy.ErrNoSystemdBoot) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v: no boot loader installed\n", err)
				return nil
			}
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func newInstallToDiskCmd(g *globalOptions) *cobra.Command {
	f := &installFlags{}
	var o deploy.DiskOptions
	var rootSize string
	cmd := &cobra.Command{
		Use:   "to-disk [flags] --source-imgref IMAGE DEVICE",
		Short: "Install an image to a whole disk: GPT, ESP and root partition",
		Long: `Write DEVICE with a GPT holding an ESP (FAT32: systemd-boot, the boot entries and the
kernels) and a root partition (label "root", the x86-64 root type of the Discoverable
Partitions Specification) holding the sysroot. The image is installed into a staging
directory first (as to-filesystem), then the partitions are made from it: the ESP with
mkfs.vfat and mcopy, the root with mkfs.ext4 -d (--filesystem ext4, the default, with
fs-verity), mkfs.btrfs --rootdir (btrfs) or mkfs.xfs and a loop mount filled with cp -a
(xfs, which has no fs-verity), the table with sfdisk, all placed with dd. The boot entry
gets root=PARTLABEL=root, so that the initramfs mounts the root partition at /sysroot.
With --via-loopback, DEVICE is a disk image file, created at the size needed
(--root-size makes room for later deployments). A device that has a partition table is
overwritten only with --wipe.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			device := args[0]
			o.Log = cmd.ErrOrStderr()
			if rootSize != "" {
				n, err := deploy.ParseSize(rootSize)
				if err != nil {
					return fmt.Errorf("--root-size: %w", err)
				}
				o.RootSize = n
			}
			// Refuse before anything is pulled; MakeDisk checks again.
			if err := deploy.CheckDisk(device, o); err != nil {
				return err
			}
			parent := os.TempDir()
			if o.Loopback {
				parent = filepath.Dir(device)
			}
			staging, err := os.MkdirTemp(parent, ".ociboot-install-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(staging)
			root := filepath.Join(staging, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				return err
			}
			if err := installToFilesystem(cmd, g, f, root, []string{"root=PARTLABEL=" + deploy.RootPartLabel}); err != nil {
				if errors.Is(err, deploy.ErrNoSystemdBoot) {
					return fmt.Errorf("%w: a disk needs a boot loader", err)
				}
				return err
			}
			if err := deploy.MakeDisk(cmd.Context(), root, device, o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Installed %s to %s\n", f.source, device)
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&o.Loopback, "via-loopback", false, "DEVICE is a disk image file to create")
	fl.BoolVar(&o.Wipe, "wipe", false, "overwrite DEVICE even if it has a partition table (or, with --via-loopback, replace the file)")
	fl.StringVar(&rootSize, "root-size", "", "the root partition's size (512M, 2G...); default: the installed content plus room to spare")
	fl.StringVar(&o.Filesystem, "filesystem", "ext4", "the root filesystem: ext4, btrfs or xfs (xfs has no fs-verity: its deployments boot with composefs=?)")
	return cmd
}

// installToFilesystem installs f's image into root (a sysroot that is not running),
// with extra kernel arguments before --karg, and systemd-boot.
func installToFilesystem(cmd *cobra.Command, g *globalOptions, f *installFlags, root string, extra []string) error {
	ctx := cmd.Context()
	ref, err := oci.ParseImageRef(f.source, f.pf.transport)
	if err != nil {
		return err
	}
	s, err := deploy.OpenSysroot(root, deploy.WithSysrootLogger(g.log))
	if err != nil {
		return err
	}
	defer s.Close()
	unlock, err := s.Lock(ctx, "ociboot install", false)
	if err != nil {
		return err
	}
	defer unlock()
	opts, done, err := f.pf.options(cmd, g)
	if err != nil {
		return err
	}
	img, err := s.Repo().Pull(ctx, ref, opts...)
	done()
	if err != nil {
		return err
	}
	d, err := s.Deploy(ctx, img, deploy.WithExtraKargs(append(extra, f.addKargs...), f.deleteKarg))
	if err != nil {
		return err
	}
	printQueued(cmd, d)
	return s.InstallBootloader(ctx, d)
}
