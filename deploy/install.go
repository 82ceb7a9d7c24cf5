package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ociboot/ociboot/kargs"
)

// WithExtraKargs changes the new deployment's kernel command line after the images'
// kargs.d have been applied: each of del is removed (KEY, or KEY=VALUE for that value
// only; absent ones are ignored), then each of add is appended. The deployment's entry
// carries the result directly (bootc install's --karg and --karg-delete). The
// composefs= root selector cannot be named.
func WithExtraKargs(add, del []string) DeployOption {
	return func(o *deployOptions) {
		o.addKargs = append(o.addKargs, add...)
		o.delKargs = append(o.delKargs, del...)
	}
}

func (o deployOptions) editKargs(c *kargs.Cmdline) error {
	for _, group := range []struct {
		kind kargs.OpKind
		args []string
	}{{kargs.DeleteIfPresent, o.delKargs}, {kargs.Append, o.addKargs}} {
		for _, a := range group.args {
			key, _, _ := strings.Cut(a, "=")
			if kargs.KeysEqual([]byte(key), []byte("composefs")) {
				return fmt.Errorf("kernel argument %q: composefs= names the deployment and cannot be changed", a)
			}
			if err := c.Apply(kargs.Op{Kind: group.kind, Arg: a}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrNoSystemdBoot is returned by InstallBootloader for an image without systemd-boot.
var ErrNoSystemdBoot = errors.New("the image has no systemd-boot (" + systemdBootEFI + ")")

const (
	systemdBootEFI = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	// The removable-media path the firmware boots without an EFI boot variable.
	efiFallback = "EFI/BOOT/BOOTX64.EFI"
	loaderConf  = "loader/loader.conf"
)

// CheckInstallRoot checks that root, where a sysroot is to be installed, is an existing
// directory that is empty but for lost+found.
func CheckInstallRoot(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("install target: %w", err)
	}
	for _, e := range ents {
		if e.Name() != "lost+found" {
			return fmt.Errorf("install target %s is not empty (it holds %s): install needs an empty filesystem", root, e.Name())
		}
	}
	return nil
}

// InstallBootloader installs systemd-boot from the image of deployment d onto the boot
// partition (the sysroot's boot/): the image's systemd-bootx64.efi as the firmware's
// fallback EFI/BOOT/BOOTX64.EFI, and loader/loader.conf with a timeout and no default
// line (the first entry by sort-key wins, and entries out of tries sort last). An image
// without systemd-boot is ErrNoSystemdBoot, with nothing written.
func (s *Sysroot) InstallBootloader(ctx context.Context, d *Deployment) error {
	v, err := s.openImage(ctx, d.ID)
	if err != nil {
		return err
	}
	defer v.Close()
	src, err := v.root.Open(systemdBootEFI)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoSystemdBoot
	} else if err != nil {
		return err
	}
	defer src.Close()
	boot := s.join(bootDir)
	dst := filepath.Join(boot, efiFallback)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(boot, filepath.Dir(loaderConf)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(boot, loaderConf), []byte("timeout 3\n"), 0o644); err != nil {
		return err
	}
	return s.Sync()
}

// Partition types (UAPI Discoverable Partitions Specification).
const (
	ESPType        = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	RootX86_64Type = "4F68BCE3-E8CD-4C8D-A3CB-FF4C6B5E2AB9"
	// RootPartLabel is the root partition's GPT label; install to-disk boots with
	// root=PARTLABEL=root so the initramfs finds the physical root.
	RootPartLabel = "root"
)

// DiskOptions tune MakeDisk.
type DiskOptions struct {
	Filesystem string // the root partition's: "ext4" (the default), "btrfs" or "xfs"
	Wipe       bool   // overwrite a device or file that already holds a partition table or data
	Loopback   bool   // the device is a regular file, created (or replaced, with Wipe) at its size
	RootSize   int64  // the root partition's size in bytes; 0 (or too small) sizes it to the content
	Log        io.Writer
}

const mib = 1 << 20

// MakeDisk writes a GPT disk with an ESP and a root partition from staging, a sysroot
// installed into a plain directory: the ESP holds staging's boot/ (entries, kernels,
// systemd-boot), the root partition everything else, with boot/ left as an empty
// directory (the ESP's mount point). The ESP is made with mkfs.vfat and filled with
// mcopy (mtools), the root as makeRootFS says (only xfs is mounted to be filled), the
// table written with sfdisk and the images placed with dd. staging's boot/ is moved away
// in the process.
func MakeDisk(ctx context.Context, staging, device string, o DiskOptions) error {
	if err := CheckDisk(device, o); err != nil {
		return err
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	work, err := os.MkdirTemp(filepath.Dir(staging), ".ociboot-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	esp := filepath.Join(work, "esp")
	if err := os.Rename(filepath.Join(staging, bootDir), esp); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(staging, bootDir), 0o755); err != nil {
		return err
	}
	espSize := roundMiB(treeSize(esp)*5/4 + 32*mib)
	espSize = max(espSize, 64*mib)
	rootSize := roundMiB(treeSize(staging)*3/2 + 64*mib)
	rootSize = max(rootSize, rootFilesystems[o.fs()].min, roundMiB(o.RootSize))
	espImg, rootImg := filepath.Join(work, "esp.img"), filepath.Join(work, "root.img")

	fmt.Fprintf(o.Log, "Making the ESP (%d MiB) and the root filesystem (%d MiB)\n", espSize/mib, rootSize/mib)
	if err := run(ctx, nil, "mkfs.vfat", "-F", "32", "-n", "ESP", "-C", espImg, strconv.FormatInt(espSize/1024, 10)); err != nil {
		return err
	}
	ents, err := os.ReadDir(esp)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		args := []string{"-s", "-p", "-Q", "-i", espImg}
		for _, e := range ents {
			args = append(args, filepath.Join(esp, e.Name()))
		}
		if err := run(ctx, []string{"MTOOLS_SKIP_CHECK=1"}, "mcopy", append(args, "::/")...); err != nil {
			return err
		}
	}
	if err := os.WriteFile(rootImg, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(rootImg, rootSize); err != nil {
		return err
	}
	if err := makeRootFS(ctx, o.fs(), staging, rootImg, work); err != nil {
		return err
	}

	// 1 MiB before the first partition (the GPT and alignment), 1 MiB after the last
	// (the backup GPT).
	espStart, rootStart := int64(mib), mib+espSize
	total := rootStart + rootSize + mib
	if o.Loopback {
		if err := os.WriteFile(device, nil, 0o644); err != nil {
			return err
		}
		if err := os.Truncate(device, total); err != nil {
			return err
		}
	} else if size, err := deviceSize(device); err != nil {
		return err
	} else if size < total {
		return fmt.Errorf("%s is too small: %d MiB, the image needs %d MiB", device, size/mib, (total+mib-1)/mib)
	}
	table := fmt.Sprintf("label: gpt\nstart=%d, size=%d, type=%s, name=\"ESP\"\nstart=%d, size=%d, type=%s, name=%q\n",
		espStart/512, espSize/512, ESPType, rootStart/512, rootSize/512, RootX86_64Type, RootPartLabel)
	fmt.Fprintf(o.Log, "Writing the partition table to %s\n", device)
	if err := runIn(ctx, table, "sfdisk", "--quiet", "--wipe", "always", device); err != nil {
		return err
	}
	for _, p := range []struct {
		img   string
		start int64
	}{{espImg, espStart}, {rootImg, rootStart}} {
		if err := run(ctx, nil, "dd", "if="+p.img, "of="+device, "bs=1M", "seek="+strconv.FormatInt(p.start/mib, 10), "conv=notrunc,fsync", "status=none"); err != nil {
			return err
		}
	}
	return nil
}

// rootFilesystems are the root partition's filesystems install supports: the mkfs
// command, its Debian package, and the smallest size it makes.
var rootFilesystems = map[string]struct {
	mkfs, pkg string
	min       int64
}{
	"ext4":  {"mkfs.ext4", "e2fsprogs", 128 * mib},
	"btrfs": {"mkfs.btrfs", "btrfs-progs", 256 * mib},
	"xfs":   {"mkfs.xfs", "xfsprogs", 320 * mib}, // mkfs.xfs refuses less than 300 MB
}

func (o DiskOptions) fs() string {
	if o.Filesystem == "" {
		return "ext4"
	}
	return o.Filesystem
}

// makeRootFS makes the root filesystem image img, of its given size, holding the tree
// staging. ext4 is made with fs-verity and 4 KiB blocks (enabling verity needs the
// filesystem's block size to be the page size) and filled by mkfs.ext4 -d; btrfs, which
// always has fs-verity, is filled by mkfs.btrfs --rootdir; xfs, which has no fs-verity
// (its deployments boot with composefs=?), has no such option: it is loop-mounted under
// work and filled with cp -a (mode, owner, times, xattrs), then unmounted.
func makeRootFS(ctx context.Context, fsType, staging, img, work string) error {
	switch fsType {
	case "ext4":
		return run(ctx, nil, "mkfs.ext4", "-q", "-F", "-O", "verity", "-b", "4096", "-L", RootPartLabel, "-d", staging, img)
	case "btrfs":
		return run(ctx, nil, "mkfs.btrfs", "-q", "-f", "-L", RootPartLabel, "--rootdir", staging, img)
	case "xfs":
		if err := run(ctx, nil, "mkfs.xfs", "-q", "-f", "-L", RootPartLabel, img); err != nil {
			return err
		}
		mnt := filepath.Join(work, "root")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return err
		}
		if err := run(ctx, nil, "mount", "-o", "loop", img, mnt); err != nil {
			return err
		}
		err := run(ctx, nil, "cp", "-a", staging+"/.", mnt+"/")
		if uerr := run(context.WithoutCancel(ctx), nil, "umount", mnt); uerr != nil && err == nil {
			err = uerr
		}
		return err
	}
	return fmt.Errorf("unknown filesystem %q", fsType)
}

// CheckDisk checks MakeDisk's options and target before anything is made: it refuses an
// unknown filesystem or one whose mkfs is missing, a target that would lose data without
// Wipe (a device with a partition table, a non-empty image file), and a regular file
// without Loopback.
func CheckDisk(device string, o DiskOptions) error {
	rf, ok := rootFilesystems[o.fs()]
	if !ok {
		return fmt.Errorf("unknown filesystem %q: want ext4, xfs or btrfs", o.Filesystem)
	}
	if _, err := exec.LookPath(rf.mkfs); err != nil {
		return fmt.Errorf("--filesystem %s needs %s (Debian package %s): %w", o.fs(), rf.mkfs, rf.pkg, err)
	}
	fi, err := os.Stat(device)
	if o.Loopback {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 && !o.Wipe {
			return fmt.Errorf("%s exists and is not empty: pass --wipe to replace it", device)
		}
		if err == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("--via-loopback writes a disk image file: %s is not a regular file", device)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return fmt.Errorf("%s is not a block device (for a disk image file, pass --via-loopback)", device)
	}
	if !o.Wipe && exec.Command("sfdisk", "--dump", device).Run() == nil {
		return fmt.Errorf("%s has a partition table: pass --wipe to overwrite the whole device", device)
	}
	return nil
}

func deviceSize(device string) (int64, error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// treeSize is an estimate of the space the files under dir take on a filesystem of 4 KiB
// blocks: every file's size rounded up to a block, and a block for each entry.
func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n += 4096
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			n += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	return n
}

func roundMiB(n int64) int64 { return (n + mib - 1) &^ (mib - 1) }

// ParseSize parses a size in bytes with an optional binary suffix: K, M, G or T (a
// trailing "iB" or "B" is allowed: "512M", "2GiB").
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult, t = int64(1)<<(10*(i+1)), t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional K, M, G or T suffix", s)
	}
	return n * mult, nil
}

func run(ctx context.Context, env []string, name string, args ...string) error {
	return runCmd(ctx, "", env, name, args...)
}

func runIn(ctx context.Context, stdin, name string, args ...string) error {
	return runCmd(ctx, stdin, nil, name, args...)
}

func runCmd(ctx context.Context, stdin string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
