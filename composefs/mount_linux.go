package composefs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sourceName is the overlay's source for this mount.
func (c *mountConfig) sourceName() string {
	if c.source == "" {
		return mountSource
	}
	return c.source
}

const (
	mountSource    = "composefs" // what mountinfo shows as the overlay's source
	mountLoopTries = 8           // LOOP_CTL_GET_FREE races with other loop users
)

// Mount mounts the composefs image at target, with objectsDir as the object store its
// regular files point into. It works as libcomposefs's mount.composefs does: the image
// is mounted as read-only EROFS (file-backed where the kernel can, else on a read-only,
// autoclearing loop device), and an overlay is mounted at target with that EROFS as its
// lower layer and objectsDir as a data-only layer.
//
// With the new mount API the EROFS mount is never attached anywhere: only the overlay
// holds it, so Unmount(target) releases everything, the loop device included. On kernels
// where that fails (before 6.7, or before detached mounts could be overlay layers), Mount
// falls back to mount(2): EROFS is mounted on a private temporary directory, the overlay
// on top, and the temporary mount is detached at once.
func Mount(ctx context.Context, image, objectsDir, target string, opts ...MountOption) error {
	var cfg mountConfig
	for _, o := range opts {
		o(&cfg)
	}
	if (cfg.upper == "") != (cfg.work == "") {
		return fmt.Errorf("mounting composefs image %s: an upper dir needs a work dir and vice versa", image)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The overlay keeps the data directory as given: an absolute path keeps mountinfo
	// meaningful from any working directory.
	if abs, err := filepath.Abs(objectsDir); err == nil {
		objectsDir = abs
	}
	f, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("mounting composefs image: %w", err)
	}
	defer f.Close()
	if cfg.digest != nil {
		if err := checkImageDigest(f, *cfg.digest); err != nil {
			return fmt.Errorf("mounting composefs image %s: %w", image, err)
		}
	}
	flags, err := readMountHeader(f)
	if err != nil {
		return fmt.Errorf("mounting composefs image %s: %w", image, err)
	}
	m := &mounter{cfg: cfg, image: f, path: image, hasACL: flags&cfsFlagHasACL != 0,
		objects: objectsDir, target: target}
	if !cfg.forceLegacy {
		err = m.mountNew(ctx)
		if !errors.Is(err, errNeedLegacy) {
			return err
		}
	}
	if lerr := m.mountLegacy(ctx); lerr != nil {
		if err != nil {
			return fmt.Errorf("%w; before that, with the new mount API: %v", lerr, err)
		}
		return lerr
	}
	return nil
}

// Unmount unmounts a composefs mount made by Mount. The EROFS mount and any loop device
// under it go away with the overlay.
func Unmount(target string) error {
	if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w (is it a mount point?)", target, err)
		}
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	return nil
}

// checkImageDigest measures f's fs-verity digest (FS_IOC_MEASURE_VERITY) and compares it
// with want. Measuring the open file, the same one that gets mounted, leaves no window for
// the path to be swapped in between.
func checkImageDigest(f *os.File, want Digest) error {
	const maxDigest = 64 // FS_VERITY_MAX_DIGEST_SIZE
	// struct fsverity_digest { u16 digest_algorithm; u16 digest_size; u8 digest[]; }
	var buf [4 + maxDigest]byte
	binary.NativeEndian.PutUint16(buf[2:], maxDigest)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_MEASURE_VERITY,
		uintptr(unsafe.Pointer(&buf[0])))
	switch errno {
	case 0:
	case unix.ENODATA:
		return fmt.Errorf("checking its digest: %w: fs-verity is not enabled on the file (%w)",
			ErrImageVerity, errno)
	case unix.EOPNOTSUPP, unix.ENOTTY:
		return fmt.Errorf("checking its digest: %w: its filesystem or the kernel lacks fs-verity (%w)",
			ErrImageVerity, errno)
	default:
		return fmt.Errorf("checking its digest: FS_IOC_MEASURE_VERITY: %w", errno)
	}
	alg := binary.NativeEndian.Uint16(buf[0:])
	size := binary.NativeEndian.Uint16(buf[2:])
	if alg != unix.FS_VERITY_HASH_ALG_SHA256 || size != uint16(len(want)) {
		return fmt.Errorf("%w: image has a digest of algorithm %d, size %d; want sha256 %s",
			ErrImageDigestMismatch, alg, size, want)
	}
	if got := Digest(buf[4 : 4+len(want)]); got != want {
		return fmt.Errorf("%w: image has %s, want %s", ErrImageDigestMismatch, got, want)
	}
	return nil
}

// readMountHeader checks the composefs header and returns its flags.
func readMountHeader(f *os.File) (uint32, error) {
	var h [cfsHeaderSize]byte
	if _, err := f.ReadAt(h[:], 0); errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("not a composefs image: shorter than the %d-byte header", len(h))
	} else if err != nil {
		return 0, fmt.Errorf("reading the composefs header: %w", err)
	}
	magic := binary.LittleEndian.Uint32(h[0:])
	version := binary.LittleEndian.Uint32(h[4:])
	if magic != cfsMagic {
		return 0, fmt.Errorf("not a composefs image: magic %#08x, want %#08x", magic, uint32(cfsMagic))
	}
	if version != cfsHeaderVersion {
		return 0, fmt.Errorf("unsupported composefs header version %d, want %d", version, cfsHeaderVersion)
	}
	return binary.LittleEndian.Uint32(h[8:]), nil
}

// errNeedLegacy marks a failure of the new mount API that an older kernel explains, after
// which Mount retries with mount(2).
var errNeedLegacy = errors.New("retrying with mount(2)")

type mounter struct {
	cfg     mountConfig
	image   *os.File
	path    string
	hasACL  bool
	objects string
	target  string
}

// mountNew mounts with fsopen/fsconfig/fsmount/move_mount.
func (m *mounter) mountNew(ctx context.Context) error {
	erofs, err := m.erofsDetached(ctx)
	if err != nil {
		return fmt.Errorf("mounting erofs image %s: %w", m.path, err)
	}
	defer unix.Close(erofs)
	mnt, err := m.overlayNew(erofs)
	if err != nil {
		return fmt.Errorf("mounting overlay on %s: %w", m.target, err)
	}
	defer unix.Close(mnt)
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, m.target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting overlay on %s: move_mount to %s: %w", m.target, m.target, err)
	}
	return nil
}

// MountDetached mounts the composefs image as Mount does but attaches it nowhere: it
// returns the overlay's mount as an open directory. Reading through it (os.OpenRoot on
// "/proc/self/fd/N", or *at calls on its descriptor) needs no mount point, and the mount
// goes away when the file is closed or the process dies. It needs the new mount API.
//
// Kernels before 6.15 refuse a detached EROFS mount as an overlay layer. There the
// overlay is mounted with mount(2) on a private temporary directory, cloned with
// open_tree(OPEN_TREE_CLONE) and unmounted at once: only the clone, attached nowhere,
// stays. (A crash in that moment leaves the temporary mount behind.)
func MountDetached(ctx context.Context, image, objectsDir string, opts ...MountOption) (*os.File, error) {
	var cfg mountConfig
	for _, o := range opts {
		o(&cfg)
	}
	if abs, err := filepath.Abs(objectsDir); err == nil {
		objectsDir = abs
	}
	f, err := os.Open(image)
	if err != nil {
		return nil, fmt.Errorf("mounting composefs image: %w", err)
	}
	defer f.Close()
	if cfg.digest != nil {
		if err := checkImageDigest(f, *cfg.digest); err != nil {
			return nil, fmt.Errorf("mounting composefs image %s: %w", image, err)
		}
	}
	flags, err := readMountHeader(f)
	if err != nil {
		return nil, fmt.Errorf("mounting composefs image %s: %w", image, err)
	}
	m := &mounter{cfg: cfg, image: f, path: image, hasACL: flags&cfsFlagHasACL != 0, objects: objectsDir}
	mnt, legacy := -1, cfg.forceLegacy
	if !legacy {
		erofs, err := m.erofsDetached(ctx)
		if err != nil {
			return nil, fmt.Errorf("mounting erofs image %s: %w", image, err)
		}
		mnt, err = m.overlayNew(erofs)
		unix.Close(erofs)
		if errors.Is(err, errNeedLegacy) {
			legacy = true
		} else if err != nil {
			return nil, fmt.Errorf("mounting composefs image %s: %w", image, err)
		}
	}
	if legacy {
		if mnt, err = m.cloneLegacy(ctx); err != nil {
			return nil, err
		}
	}
	return os.NewFile(uintptr(mnt), "composefs:"+filepath.Base(image)), nil
}

// cloneLegacy makes the detached overlay of MountDetached with mount(2): mounted on a
// temporary directory, cloned, unmounted.
func (m *mounter) cloneLegacy(ctx context.Context) (int, error) {
	tmp, err := os.MkdirTemp("", ".composefs-detached-")
	if err != nil {
		return -1, fmt.Errorf("mounting composefs image %s: %w", m.path, err)
	}
	defer os.Remove(tmp)
	m.target = tmp
	if err := m.mountLegacy(ctx); err != nil {
		return -1, fmt.Errorf("mounting composefs image %s: %w", m.path, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, tmp, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if uerr := unix.Unmount(tmp, unix.MNT_DETACH); uerr != nil && err == nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mounting composefs image %s: unmounting %s: %w", m.path, tmp, uerr)
	}
	if err != nil {
		return -1, fmt.Errorf("mounting composefs image %s: open_tree of %s: %w", m.path, tmp, err)
	}
	return fd, nil
}

// erofsDetached returns the fd of a detached read-only EROFS mount of the image.
func (m *mounter) erofsDetached(ctx context.Context) (int, error) {
	if !m.cfg.forceLoop {
		// The kernel opens the source path itself; /proc/self/fd names exactly the file we
		// opened (and measured).
		fd, err := m.erofsFrom("/proc/self/fd/" + strconv.Itoa(int(m.image.Fd())))
		if !errors.Is(err, unix.ENOTBLK) {
			return fd, err
		}
		// ENOTBLK: no CONFIG_EROFS_FS_BACKED_BY_FILE (or Linux < 6.12); use a loop device.
	}
	loop, name, err := attachLoop(ctx, m.image, m.path)
	if err != nil {
		return -1, err
	}
	// The loop device autoclears when its last user goes: after this close, that is the
	// EROFS superblock, or nobody if mounting failed.
	defer loop.Close()
	return m.erofsFrom(name)
}

func (m *mounter) erofsFrom(source string) (int, error) {
	fc, err := fsOpen("erofs")
	if err != nil {
		return -1, err
	}
	defer fc.close()
	if err := fc.set("source", source); err != nil {
		return -1, err
	}
	if err := fc.flag("ro"); err != nil {
		return -1, err
	}
	if !m.hasACL {
		// As mount.composefs: no ACL lookups for an image that has none.
		if err := fc.flag("noacl"); err != nil {
			return -1, err
		}
	}
	if err := fc.create(); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("%w (is it a valid EROFS image? see dmesg)", err)
		}
		return -1, err
	}
	return fc.mount(unix.MOUNT_ATTR_RDONLY)
}

// overlayNew creates the overlay on the detached EROFS mount and returns it, detached.
func (m *mounter) overlayNew(erofs int) (int, error) {
	fc, err := fsOpen("overlay")
	if err != nil {
		return -1, err
	}
	defer fc.close()
	// Before Linux 6.5 overlayfs took options through the legacy shim, which accepts any
	// key unchecked; only the full fs_context implementation rejects this one.
	if unix.FsconfigSetString(fc.fd, "unsupported", "unsupported") == nil {
		return -1, fmt.Errorf("overlayfs does not validate fsconfig keys: %w", errNeedLegacy)
	}
	fc.messages() // the expected complaint about "unsupported" must not blame a later step
	const dataOnly = " (does the kernel support data-only lower layers, Linux ≥ 6.7?)"
	steps := []struct{ key, value, hint string }{
		{"source", m.cfg.sourceName(), ""},
		{"metacopy", "on", ""},
		{"redirect_dir", "on", ""},
		{"verity", map[VerityMode]string{VerityOff: "off", VerityRequire: "require"}[m.cfg.verity],
			" (does the kernel support overlay verity, Linux ≥ 6.6?)"},
		// A path through /proc/self/fd reaches the detached mount, and a path works on
		// every kernel with lowerdir+ (FSCONFIG_SET_FD for layers came later).
		{"lowerdir+", "/proc/self/fd/" + strconv.Itoa(erofs), dataOnly},
		{"datadir+", m.objects, dataOnly},
	}
	if m.cfg.upper != "" {
		steps = append(steps,
			struct{ key, value, hint string }{"upperdir", m.cfg.upper, ""},
			struct{ key, value, hint string }{"workdir", m.cfg.work, ""})
	}
	for _, s := range steps {
		if err := fc.set(s.key, s.value); err != nil {
			if errors.Is(err, unix.EINVAL) && s.hint == dataOnly {
				return -1, fmt.Errorf("%w%s: %w", err, s.hint, errNeedLegacy)
			}
			if errors.Is(err, unix.EINVAL) {
				return -1, fmt.Errorf("%w%s", err, s.hint)
			}
			return -1, err
		}
	}
	if err := fc.create(); err != nil {
		// Older kernels with lowerdir+ can still refuse a detached mount as a layer
		// (clone_private_mount wanted a mount in the caller's namespace).
		if errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("%w (see dmesg): %w", err, errNeedLegacy)
		}
		return -1, err
	}
	attr := 0
	if m.cfg.upper == "" {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	return fc.mount(attr)
}

// mountLegacy mounts with mount(2) only, as mount.composefs does on older kernels.
func (m *mounter) mountLegacy(ctx context.Context) error {
	loop, name, err := attachLoop(ctx, m.image, m.path)
	if err != nil {
		return fmt.Errorf("mounting erofs image %s: %w", m.path, err)
	}
	defer loop.Close()
	tmp, err := os.MkdirTemp("", ".composefs-")
	if err != nil {
		return fmt.Errorf("mounting erofs image %s: %w", m.path, err)
	}
	defer os.Remove(tmp)
	erofsData := ""
	if !m.hasACL {
		erofsData = "noacl"
	}
	if err := unix.Mount(name, tmp, "erofs", unix.MS_RDONLY|unix.MS_SILENT, erofsData); err != nil {
		return fmt.Errorf("mounting erofs image %s (on %s) at %s: %w", m.path, name, tmp, err)
	}
	// The overlay keeps its own reference to the EROFS mount; this one is only the path
	// the legacy lowerdir option needs, so it goes as soon as the overlay exists (or not).
	defer unix.Unmount(tmp, unix.MNT_DETACH)

	opts := []string{"metacopy=on", "redirect_dir=on",
		"lowerdir=" + escapeOverlayPath(tmp) + "::" + escapeOverlayPath(m.objects)}
	if m.cfg.upper != "" {
		opts = append(opts, "upperdir="+escapeOverlayPath(m.cfg.upper), "workdir="+escapeOverlayPath(m.cfg.work))
	}
	if m.cfg.verity == VerityRequire {
		// verity=off is the default; leaving it out keeps kernels before 6.6 working.
		opts = append(opts, "verity=require")
	}
	var flags uintptr
	if m.cfg.upper == "" {
		flags = unix.MS_RDONLY
	}
	data := strings.Join(opts, ",")
	if err := unix.Mount(m.cfg.sourceName(), m.target, "overlay", flags, data); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("mounting overlay on %s: mount(2) -o %s: %w (see dmesg; does the kernel support "+
				"data-only lower layers, Linux ≥ 6.5, and overlay verity, Linux ≥ 6.6?)", m.target, data, err)
		}
		return fmt.Errorf("mounting overlay on %s: mount(2) -o %s: %w", m.target, data, err)
	}
	return nil
}

// escapeOverlayPath escapes what overlayfs's option parser splits on: ',' between
// options, ':' between layers, and the escape character itself.
func escapeOverlayPath(p string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(p)
}

// attachLoop attaches f to a free loop device, read-only and autoclearing, and returns the
// open device (the loop stays attached at least while it is open) and its path.
func attachLoop(ctx context.Context, f *os.File, path string) (*os.File, string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, "", fmt.Errorf("attaching a loop device: %w", err)
	}
	defer ctl.Close()
	cfg := unix.LoopConfig{
		Fd:   uint32(f.Fd()),
		Size: 4096, // the EROFS block size of composefs images
		Info: unix.LoopInfo64{
			Flags: unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO,
		},
	}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], path)
	var lastErr error
	for range mountLoopTries {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, "", fmt.Errorf("attaching a loop device: LOOP_CTL_GET_FREE: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(n)
		dev, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			return nil, "", fmt.Errorf("attaching a loop device: %w", err)
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, name, nil
		}
		dev.Close()
		lastErr = fmt.Errorf("attaching %s to %s: LOOP_CONFIGURE: %w", path, name, err)
		switch {
		case errors.Is(err, unix.EBUSY):
			// Someone else took the device between GET_FREE and CONFIGURE.
		case errors.Is(err, unix.EINVAL) && cfg.Info.Flags&unix.LO_FLAGS_DIRECT_IO != 0:
			// Direct I/O is only an optimisation; some filesystems refuse it.
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
		default:
			return nil, "", lastErr
		}
	}
	return nil, "", lastErr
}

// fsContext is a filesystem context from fsopen(2). Its errors carry what the kernel
// logged to the context, which says more than the errno alone.
type fsContext struct {
	fd     int
	fstype string
}

func fsOpen(fstype string) (*fsContext, error) {
	fd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("fsopen %s: %w: %w", fstype, err, errNeedLegacy)
		}
		return nil, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	return &fsContext{fd: fd, fstype: fstype}, nil
}

func (c *fsContext) close() { unix.Close(c.fd) }

func (c *fsContext) set(key, value string) error {
	return c.wrap("fsconfig "+key+"="+value, unix.FsconfigSetString(c.fd, key, value))
}

func (c *fsContext) flag(key string) error {
	return c.wrap("fsconfig "+key, unix.FsconfigSetFlag(c.fd, key))
}

func (c *fsContext) create() error {
	return c.wrap("fsconfig create", unix.FsconfigCreate(c.fd))
}

func (c *fsContext) mount(attr int) (int, error) {
	fd, err := unix.Fsmount(c.fd, unix.FSMOUNT_CLOEXEC, attr)
	return fd, c.wrap("fsmount", err)
}

// wrap names the failed step and appends the kernel's messages for it.
func (c *fsContext) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if msgs := c.messages(); len(msgs) > 0 {
		return fmt.Errorf("%s: %w (kernel: %s)", op, err, strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%s: %w", op, err)
}

// messages reads and so clears the context's log. Many filesystems still log to dmesg
// only; overlayfs and the VFS parameter parser write here.
func (c *fsContext) messages() []string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 8 { // the log keeps the last 8 messages
		n, err := unix.Read(c.fd, buf)
		if err != nil || n <= 0 {
			break
		}
		// Each message is "e ", "w " or "i " and the text.
		msgs = append(msgs, strings.TrimSpace(string(buf[min(n, 2):n])))
	}
	return msgs
}
