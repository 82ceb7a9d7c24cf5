package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/kargs"
)

// imageView is a composefs image opened read-only through a detached mount: the tree as
// it will boot, with no mount point and nothing left mounted if the process dies.
type imageView struct {
	digest composefs.Digest
	mnt    *os.File
	root   *os.Root
}

// openImage opens the composefs image d of the sysroot's repository.
func (s *Sysroot) openImage(ctx context.Context, d composefs.Digest) (*imageView, error) {
	mnt, err := composefs.MountDetached(ctx, s.repo.ImagePath(d), s.repo.Store().Dir())
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot("/proc/self/fd/" + strconv.Itoa(int(mnt.Fd())))
	if err != nil {
		mnt.Close()
		return nil, fmt.Errorf("opening image %s: %w", d, err)
	}
	return &imageView{digest: d, mnt: mnt, root: root}, nil
}

func (v *imageView) Close() error {
	if v == nil {
		return nil
	}
	v.root.Close()
	return v.mnt.Close()
}

// sub opens a directory of the image as its own root ("etc", "var"); a missing one is
// (nil, nil).
func (v *imageView) sub(dir string) (*os.Root, error) {
	r, err := v.root.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return r, err
}

// bootFiles are the kernel and initramfs an image ships, as bootc images do:
// /usr/lib/modules/$KVER/vmlinuz with initramfs.img beside it.
type bootFiles struct {
	kver           string
	kernel, initrd string // paths in the image
}

var errNoKernel = errors.New("the image has no kernel: a bootable image has /usr/lib/modules/$KVER/vmlinuz with initramfs.img beside it")

func (v *imageView) bootFiles() (*bootFiles, error) {
	const modules = "usr/lib/modules"
	ents, err := fs.ReadDir(v.root.FS(), modules)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", v.digest, err)
	}
	var found []bootFiles
	for _, e := range ents {
		k := path.Join(modules, e.Name(), "vmlinuz")
		if fi, err := v.root.Lstat(k); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		i := path.Join(modules, e.Name(), "initramfs.img")
		if fi, err := v.root.Lstat(i); err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("image %s: %s has no initramfs.img beside it", v.digest, k)
		}
		found = append(found, bootFiles{kver: e.Name(), kernel: k, initrd: i})
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("image %s: %w", v.digest, errNoKernel)
	case 1:
		return &found[0], nil
	}
	// Several kernels: the newest version, as bootc picks.
	slices.SortFunc(found, func(a, b bootFiles) int { return compareVersions(a.kver, b.kver) })
	return &found[len(found)-1], nil
}

// kargs reads the image's kargs.d for this machine's architecture; present is false
// when the image has no kargs.d at all.
func (v *imageView) kargs() (*kargs.Cmdline, bool, error) {
	c, present, err := kargs.ReadKargsD(v.root.FS(), kargs.KargsDPath, kargs.RustArch(runtime.GOARCH))
	if err != nil {
		return nil, false, fmt.Errorf("image %s: %w", v.digest, err)
	}
	return c, present, nil
}

// osRelease reads the image's os-release (usr/lib/os-release, else etc/os-release).
func (v *imageView) osRelease() map[string]string {
	out := map[string]string{}
	for _, p := range []string{"usr/lib/os-release", "etc/os-release"} {
		data, err := v.root.ReadFile(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			k, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
			if !ok || strings.HasPrefix(k, "#") {
				continue
			}
			if u, err := strconv.Unquote(val); err == nil {
				val = u
			} else {
				val = strings.Trim(val, `'"`)
			}
			out[k] = val
		}
		break
	}
	return out
}

// compareVersions orders kernel versions by their numeric fields ("6.12.9" < "6.12.10").
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			return na - nb
		case (ea != nil || eb != nil) && fa[i] != fb[i]:
			return strings.Compare(fa[i], fb[i])
		}
	}
	return len(fa) - len(fb)
}
