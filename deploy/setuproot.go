package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/kargs"
	"golang.org/x/sys/unix"
)

// SetupRootConfig says what SetupRoot assembles and where.
type SetupRootConfig struct {
	// Sysroot is the physical root: the directory holding composefs/ and state/ (in the
	// initramfs, the root partition mounted at /sysroot).
	Sysroot string
	// Cmdline is the kernel command line; CmdlineSource names where it was read (for
	// messages: "/proc/cmdline").
	Cmdline       []byte
	CmdlineSource string
	// Target is where the deployment is mounted; "" means Sysroot itself, stacked over
	// the physical root, which is what the initramfs switch_roots into.
	Target string
}

// SetupRootResult is what SetupRoot mounted.
type SetupRootResult struct {
	ID             composefs.Digest
	VerityOptional bool   // composefs=?<id>: mounted with verity=off
	Target         string // the assembled root
	SysrootBound   bool   // the physical root is at Target/sysroot (the image has /sysroot)
}

// BootedSourcePrefix starts the source of the overlay mounted as / by SetupRoot:
// "composefs:<digest>" in /proc/self/mountinfo, as bootc's initramfs setup writes it.
const BootedSourcePrefix = "composefs:"

// SetupRoot mounts the deployment the kernel command line names (composefs=<digest>, or
// composefs=?<digest> when fs-verity is optional) as a root filesystem, as bootc's
// initramfs-setup setup-root does:
//
//  1. detached clones of the physical root, of state/deploy/<digest>/etc and of
//     state/os/default/var are taken (open_tree), before anything covers them;
//  2. the image composefs/images/<digest> is checked (fs-verity digest measured by the
//     kernel with verity required, computed in software when optional) and mounted at
//     Target over the object store composefs/objects (overlay with lowerdir+= the EROFS,
//     datadir+= the objects, metacopy=on, redirect_dir=on, verity=require or off),
//     read-only, with the source "composefs:<digest>" (see BootedFromMounts); with
//     Target the physical root's own mount point, the overlay is stacked on it;
//  3. the clones are attached at Target/etc (writable), Target/var (writable) and, when
//     the image has the directory, Target/sysroot.
//
// The initramfs then runs switch_root /sysroot /sbin/init (or systemd switches root into
// /sysroot), and the deployment is /. The physical root stays writable at /sysroot:
// ociboot on the booted host writes its store and boot entries there (bootc makes it
// read-only and remounts it in a private namespace; ociboot does not yet).
//
// A command line with no or several composefs= arguments, a missing object store, image
// or state directory, and an image that is not a composefs image or not the one named
// are errors naming what is wrong, and nothing stays mounted.
func SetupRoot(ctx context.Context, cfg SetupRootConfig) (*SetupRootResult, error) {
	id, optional, err := rootSelectorOf(cfg.Cmdline, cfg.CmdlineSource)
	if err != nil {
		return nil, err
	}
	sys, err := filepath.Abs(cfg.Sysroot)
	if err != nil {
		return nil, err
	}
	target := cfg.Target
	if target == "" {
		target = sys
	}
	if target, err = filepath.Abs(target); err != nil {
		return nil, err
	}
	objects := filepath.Join(sys, composefsDir, "objects")
	image := filepath.Join(sys, composefsDir, "images", id.String())
	etc := filepath.Join(sys, stateDir(id), "etc")
	vard := filepath.Join(sys, varDir)
	if err := requireDir(objects); err != nil {
		return nil, fmt.Errorf("deployment %s: the composefs object store: %w", id, err)
	}
	if st, err := os.Stat(image); err != nil {
		return nil, fmt.Errorf("deployment %s: its composefs image: %w", id, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("deployment %s: its composefs image %s is not a regular file", id, image)
	}
	if err := requireDir(etc); err != nil {
		return nil, fmt.Errorf("deployment %s: its /etc: %w", id, err)
	}
	if err := requireDir(vard); err != nil {
		return nil, fmt.Errorf("deployment %s: the shared /var: %w", id, err)
	}
	opts := []composefs.MountOption{composefs.WithSource(BootedSourcePrefix + id.String())}
	if optional {
		// No fs-verity to measure with (that is what ? says): hash the image in software.
		// It is small; the objects are checked by nobody, as verity=off means.
		if err := checkImageSoftware(image, id); err != nil {
			return nil, fmt.Errorf("deployment %s: %w", id, err)
		}
		opts = append(opts, composefs.WithVerity(composefs.VerityOff))
	} else {
		opts = append(opts, composefs.WithVerity(composefs.VerityRequire), composefs.WithImageDigest(id))
	}

	// Clone before mounting: with Target the physical root's mount point, the overlay
	// covers the paths.
	var clones []int
	defer func() {
		for _, fd := range clones {
			unix.Close(fd)
		}
	}()
	for _, p := range []string{etc, vard, sys} {
		fd, err := unix.OpenTree(unix.AT_FDCWD, p, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("deployment %s: bind-mounting %s: open_tree: %w", id, p, err)
		}
		clones = append(clones, fd)
	}

	if err := composefs.Mount(ctx, image, objects, target, opts...); err != nil {
		if !optional && errors.Is(err, composefs.ErrImageVerity) {
			return nil, fmt.Errorf("deployment %s: %w (the command line requires fs-verity: composefs=%s; "+
				"composefs=?%s boots without it)", id, err, id, id)
		}
		return nil, fmt.Errorf("deployment %s: %w", id, err)
	}
	res := &SetupRootResult{ID: id, VerityOptional: optional, Target: target}
	mounted := []string{target}
	undo := func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			unix.Unmount(mounted[i], unix.MNT_DETACH)
		}
	}
	for i, name := range []string{"etc", "var", "sysroot"} {
		at := filepath.Join(target, name)
		if err := requireDir(at); err != nil {
			if name == "sysroot" && errors.Is(err, fs.ErrNotExist) {
				continue // as bootc: an image without /sysroot gets no view of the physical root
			}
			undo()
			return nil, fmt.Errorf("deployment %s: the image has no /%s to mount on: %w", id, name, err)
		}
		if err := unix.MoveMount(clones[i], "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			undo()
			return nil, fmt.Errorf("deployment %s: mounting %s on %s: move_mount: %w", id,
				[]string{etc, vard, sys}[i], at, err)
		}
		mounted = append(mounted, at)
		res.SysrootBound = res.SysrootBound || name == "sysroot"
	}
	return res, nil
}

// TeardownRoot unmounts what SetupRoot mounted at target: target/sysroot, target/var,
// target/etc, then the composefs mount itself. Missing mounts are skipped.
func TeardownRoot(target string) error {
	var errs []error
	for _, p := range []string{"sysroot", "var", "etc", ""} {
		at := filepath.Join(target, p)
		if err := unix.Unmount(at, unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) &&
			!errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", at, err))
		}
	}
	return errors.Join(errs...)
}

// rootSelectorOf finds the one composefs= argument of a command line, or says what it found.
func rootSelectorOf(cmdline []byte, source string) (composefs.Digest, bool, error) {
	if source == "" {
		source = "the kernel command line"
	}
	c := kargs.Parse(bytes.TrimSpace(cmdline))
	ps := c.Get([]byte(rootKey))
	switch len(ps) {
	case 0:
		return composefs.Digest{}, false, fmt.Errorf("%s names no deployment: it has no composefs= argument (it reads %q)",
			source, clip(strings.TrimSpace(string(cmdline)), 300))
	case 1:
	default:
		var found []string
		for _, p := range ps {
			found = append(found, p.String())
		}
		return composefs.Digest{}, false, fmt.Errorf("%s has %d composefs= arguments (%s), want exactly 1",
			source, len(ps), strings.Join(found, " "))
	}
	d, optional, err := ParseRootSelector(c)
	if err != nil {
		return d, false, fmt.Errorf("%s: %s: %w", source, ps[0].String(), err)
	}
	return d, optional, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func requireDir(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", p)
	}
	return nil
}

// checkImageSoftware computes the image file's fs-verity digest in software and compares
// it with want: the check the kernel's measurement makes where fs-verity is enabled.
func checkImageSoftware(image string, want composefs.Digest) error {
	f, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("its composefs image: %w", err)
	}
	defer f.Close()
	h := composefs.NewVerityHasher(composefs.SHA256)
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("its composefs image %s: %w", image, err)
	}
	if got := composefs.Digest(h.Sum()); got != want {
		return fmt.Errorf("its composefs image %s is corrupt: %w: it has %s", image, composefs.ErrImageDigestMismatch, got)
	}
	return nil
}

// BootedFromMounts returns the deployment mounted as / according to mountinfo (the text
// of /proc/self/mountinfo): the digest in the source "composefs:<digest>" of the
// topmost / mount, as SetupRoot mounts it. It works where /proc/cmdline is stale (a soft
// reboot) or names something else. false: / is not a deployment.
func BootedFromMounts(mountinfo string) (composefs.Digest, bool) {
	var fstype, source string
	found := false
	for line := range strings.Lines(mountinfo) {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		f := strings.Fields(line)
		if len(f) < 7 || f[4] != "/" {
			continue
		}
		for i := 6; i < len(f)-2; i++ {
			if f[i] == "-" {
				fstype, source, found = f[i+1], f[i+2], true
				break
			}
		}
	}
	if !found || fstype != "overlay" {
		return composefs.Digest{}, false
	}
	rest, ok := strings.CutPrefix(source, BootedSourcePrefix)
	if !ok {
		return composefs.Digest{}, false
	}
	d, err := composefs.ParseDigest(rest)
	if err != nil {
		return composefs.Digest{}, false
	}
	return d, true
}
