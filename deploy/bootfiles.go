package deploy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"golang.org/x/sys/unix"
)

// Kernels and initramfs images live on the boot partition once per content, in
// ociboot/<digest>/ beside loader/, where both boot loaders can read them (a type #1
// entry names files on its own partition). Deployments of images with the same kernel
// and initramfs share one directory; vfat has no symlinks or hard links, so sharing is by
// naming the same directory from several entries, as bootc's composefs backend does.
//
// The digest is bootc's: sha256 over the kernel's bytes immediately followed by the
// initramfs's bytes, with nothing between or around them, as lowercase hex. (The same
// digest goes into bootc's origin files, [boot] digest=.) A concatenation does not say
// where the kernel ends, so two pairs with the same bytes split differently would share
// a name; SHA256SUMS, written in each directory with each file's own sha256 in
// sha256sum(1) form, tells them apart, and lets VerifyBootFiles name the file that
// changed.
//
// A directory is written under a temporary name (.tmp-*), each file and the directory
// fsynced, and then renamed to its digest, so ociboot/<digest> is complete or absent.
// Only one process writes at a time (the caller holds the sysroot lock), which is what
// makes removing leftover temporary directories safe.

const (
	bootFilesTop   = "ociboot" // on the boot partition
	BootKernelFile = "vmlinuz"
	BootInitrdFile = "initramfs.img"
	bootSumsFile   = "SHA256SUMS"
	bootTmpPrefix  = ".tmp-" // a directory being written or removed
)

// BootFileError is one problem VerifyBootFiles found, naming the file.
type BootFileError struct {
	Path string // relative to the boot partition, "ociboot/<digest>/vmlinuz"
	Err  error  // wraps composefs.ErrDigestMismatch when the content changed
}

func (e *BootFileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *BootFileError) Unwrap() error { return e.Err }

// BootFilesDigest is the digest of a kernel and initramfs pair, the name of their
// directory (ociboot/<digest>): a caller that can read them twice checks
// VerifyBootFiles on that directory first and skips InstallBootFiles, which needs room
// for one more copy while it writes.
func BootFilesDigest(kernel, initrd io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, kernel); err != nil {
		return "", fmt.Errorf("reading the kernel: %w", err)
	}
	if _, err := io.Copy(h, initrd); err != nil {
		return "", fmt.Errorf("reading the initramfs: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// BootFilePaths are the paths a boot entry gives for the kernel and initramfs in dir
// (as InstallBootFiles returns it): absolute from the root of the boot partition.
func BootFilePaths(dir string) (linux, initrd string) {
	return "/" + dir + "/" + BootKernelFile, "/" + dir + "/" + BootInitrdFile
}

// InstallBootFiles stores a kernel and an initramfs on the boot partition boot and
// returns their directory, "ociboot/<digest>". When that directory exists and verifies,
// it is kept and the copy just written is dropped; when it does not verify (damaged), it
// is replaced. Leftovers of interrupted earlier calls are removed first.
func InstallBootFiles(boot *os.Root, kernel, initrd io.Reader) (dir string, err error) {
	top, err := openBootFilesTop(boot, true)
	if err != nil {
		return "", err
	}
	defer top.Close()
	if err := removeBootFilesLeftovers(top); err != nil {
		return "", err
	}
	tmp := bootTmpPrefix + randomHex()
	if err := unix.Mkdirat(top.fd(), tmp, 0o755); err != nil {
		return "", fmt.Errorf("creating %s/%s: %w", bootFilesTop, tmp, err)
	}
	bootStep("bootfiles: temporary directory created")
	defer func() {
		if err != nil {
			removeAll(top.fd(), tmp)
		}
	}()
	t, err := top.openDir(tmp)
	if err != nil {
		return "", err
	}
	defer t.Close()
	all := sha256.New()
	var sums bytes.Buffer
	for _, f := range []struct {
		name string
		r    io.Reader
	}{{BootKernelFile, kernel}, {BootInitrdFile, initrd}} {
		one := sha256.New()
		n, err := writeStream(t, f.name, f.r, all, one)
		if err != nil {
			return "", fmt.Errorf("writing %s/%s: %w", t.name, f.name, err)
		}
		if n == 0 {
			return "", fmt.Errorf("writing %s/%s: the %s is empty", t.name, f.name, map[string]string{BootKernelFile: "kernel", BootInitrdFile: "initramfs"}[f.name])
		}
		fmt.Fprintf(&sums, "%x  %s\n", one.Sum(nil), f.name)
	}
	if err := writeDurable(t, bootSumsFile, sums.Bytes()); err != nil {
		return "", fmt.Errorf("writing %s/%s: %w", t.name, bootSumsFile, err)
	}
	if err := unix.Fsync(t.fd()); err != nil {
		return "", fmt.Errorf("syncing %s: %w", t.name, err)
	}
	digest := hex.EncodeToString(all.Sum(nil))
	dir = bootFilesTop + "/" + digest
	_, serr := top.stat(digest)
	switch {
	case serr == nil && VerifyBootFiles(boot, dir) == nil:
		if err := removeAll(top.fd(), tmp); err != nil {
			return "", fmt.Errorf("removing %s/%s: %w", bootFilesTop, tmp, err)
		}
		return dir, unix.Fsync(top.fd())
	case serr == nil:
		// Damaged: swap the new copy in, then remove the damaged one (now at tmp).
		err = unix.Renameat2(top.fd(), tmp, top.fd(), digest, unix.RENAME_EXCHANGE)
		if noRenameFlags(err) {
			// The damaged copy is useless to any entry naming it: removing it first loses nothing.
			if err = removeAll(top.fd(), digest); err == nil {
				err = unix.Renameat(top.fd(), tmp, top.fd(), digest)
			}
		}
	case errors.Is(serr, fs.ErrNotExist):
		err = unix.Renameat2(top.fd(), tmp, top.fd(), digest, unix.RENAME_NOREPLACE)
		if noRenameFlags(err) {
			err = unix.Renameat(top.fd(), tmp, top.fd(), digest)
		}
	default:
		err = serr
	}
	if err != nil {
		return "", fmt.Errorf("renaming %s/%s to %s: %w", bootFilesTop, tmp, dir, err)
	}
	bootStep("bootfiles: renamed")
	if err := removeAll(top.fd(), tmp); err != nil { // the damaged copy, if one was swapped out
		return "", fmt.Errorf("removing the damaged copy of %s: %w", dir, err)
	}
	if err := unix.Fsync(top.fd()); err != nil {
		return "", fmt.Errorf("syncing %s: %w", bootFilesTop, err)
	}
	bootStep("bootfiles: synced")
	return dir, nil
}

// VerifyBootFiles checks the directory dir ("ociboot/<digest>") as fsck does: both files
// present and regular, each with the sha256 its SHA256SUMS gives, and together with the
// digest the directory is named by. It returns nil, or one *BootFileError per problem
// (joined), each naming the file.
func VerifyBootFiles(boot *os.Root, dir string) error {
	digest, ok := strings.CutPrefix(dir, bootFilesTop+"/")
	if !ok || !isBootDigest(digest) {
		return fmt.Errorf("%q is not a boot files directory (%s/<sha256 hex>)", dir, bootFilesTop)
	}
	var problems []error
	bad := func(file string, err error) {
		problems = append(problems, &BootFileError{Path: dir + "/" + file, Err: err})
	}
	want, err := readBootSums(boot, dir)
	if err != nil {
		bad(bootSumsFile, err)
	}
	all := sha256.New()
	complete, changed := true, false
	for _, name := range []string{BootKernelFile, BootInitrdFile} {
		one := sha256.New()
		if err := hashBootFile(boot, dir+"/"+name, all, one); err != nil {
			bad(name, err)
			complete = false
			continue
		}
		got := hex.EncodeToString(one.Sum(nil))
		if w, ok := want[name]; ok && w != got {
			bad(name, fmt.Errorf("%w: content has sha256 %s, %s says %s", composefs.ErrDigestMismatch, got, bootSumsFile, w))
			changed = true
		}
	}
	// Files that match their sums but not the name: the sums were rewritten with them.
	if got := hex.EncodeToString(all.Sum(nil)); complete && !changed && got != digest {
		bad(BootKernelFile+"+"+BootInitrdFile, fmt.Errorf("%w: together they have sha256 %s, the directory's name says %s",
			composefs.ErrDigestMismatch, got, digest))
	}
	return errors.Join(problems...)
}

// ListBootFiles lists the boot files directories, "ociboot/<digest>", sorted; temporary
// directories are not listed.
func ListBootFiles(boot *os.Root) ([]string, error) {
	ents, err := fs.ReadDir(boot.FS(), bootFilesTop)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listing %s: %w", bootFilesTop, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && isBootDigest(e.Name()) {
			out = append(out, bootFilesTop+"/"+e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// RemoveBootFiles removes the directory dir ("ociboot/<digest>"), for garbage
// collection: it is first renamed to a temporary name, so it is gone at once, and a crash
// leaves a leftover the next InstallBootFiles or RemoveBootFiles removes, never a
// half-emptied directory under its digest. An absent directory is not an error.
func RemoveBootFiles(boot *os.Root, dir string) error {
	digest, ok := strings.CutPrefix(dir, bootFilesTop+"/")
	if !ok || !isBootDigest(digest) {
		return fmt.Errorf("%q is not a boot files directory (%s/<sha256 hex>)", dir, bootFilesTop)
	}
	top, err := openBootFilesTop(boot, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer top.Close()
	if err := removeBootFilesLeftovers(top); err != nil {
		return err
	}
	tmp := bootTmpPrefix + randomHex()
	if err := unix.Renameat(top.fd(), digest, top.fd(), tmp); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	bootStep("bootfiles: renamed away")
	if err := unix.Fsync(top.fd()); err != nil {
		return fmt.Errorf("syncing %s: %w", bootFilesTop, err)
	}
	if err := removeAll(top.fd(), tmp); err != nil {
		return fmt.Errorf("removing %s (as %s/%s): %w", dir, bootFilesTop, tmp, err)
	}
	return nil
}

// noRenameFlags reports whether renameat2 failed for want of the flag asked for (an
// older kernel, or a filesystem without it).
func noRenameFlags(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)
}

func isBootDigest(s string) bool {
	return len(s) == 2*sha256.Size && strings.Trim(s, "0123456789abcdef") == ""
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// openBootFilesTop opens ociboot/ on the boot partition, creating it when create is set.
func openBootFilesTop(boot *os.Root, create bool) (*blsDir, error) {
	if create {
		if err := boot.Mkdir(bootFilesTop, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", bootFilesTop, err)
		}
	}
	if fi, err := boot.Lstat(bootFilesTop); err != nil {
		return nil, fmt.Errorf("opening %s: %w", bootFilesTop, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("opening %s: %s, not a directory", bootFilesTop, fi.Mode().Type())
	}
	f, err := boot.Open(bootFilesTop)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", bootFilesTop, err)
	}
	return &blsDir{f: f, name: bootFilesTop}, nil
}

// removeBootFilesLeftovers removes what interrupted installs and removals left.
func removeBootFilesLeftovers(top *blsDir) error {
	names, err := readNames(top.fd())
	if err != nil {
		return fmt.Errorf("reading %s: %w", top.name, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, bootTmpPrefix) {
			if err := removeAll(top.fd(), n); err != nil {
				return fmt.Errorf("removing the leftover %s/%s: %w", top.name, n, err)
			}
		}
	}
	return nil
}

// writeStream creates name in dir from r, feeding the bytes to the hashes too, and
// fsyncs it.
func writeStream(dir *blsDir, name string, r io.Reader, hashes ...hash.Hash) (int64, error) {
	fd, err := unix.Openat(dir.fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	ws := []io.Writer{f}
	for _, h := range hashes {
		ws = append(ws, h)
	}
	n, err := io.Copy(io.MultiWriter(ws...), r)
	if err != nil {
		return n, err
	}
	bootStep("bootfiles: wrote " + name)
	return n, f.Sync()
}

// hashBootFile feeds the regular file rel of boot to the hashes.
func hashBootFile(boot *os.Root, rel string, hashes ...hash.Hash) error {
	fi, err := boot.Lstat(rel)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("a %s, not a regular file", fi.Mode().Type())
	}
	f, err := boot.Open(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	ws := make([]io.Writer, len(hashes))
	for i, h := range hashes {
		ws[i] = h
	}
	_, err = io.Copy(io.MultiWriter(ws...), f)
	return err
}

// readBootSums reads dir's SHA256SUMS: file name → sha256 hex. A directory without one
// (written by bootc, or before ociboot wrote them) verifies by its name alone.
func readBootSums(boot *os.Root, dir string) (map[string]string, error) {
	data, err := boot.ReadFile(dir + "/" + bootSumsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || !isBootDigest(sum) || (name != BootKernelFile && name != BootInitrdFile) || out[name] != "" {
			return nil, fmt.Errorf("%w: unreadable line %q", composefs.ErrDigestMismatch, sc.Text())
		}
		out[name] = sum
	}
	return out, nil
}
