package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"github.com/ociboot/ociboot/kargs"
	"golang.org/x/sys/unix"
)

// Marking a boot good or bad, as systemd-bless-boot does (systemd's
// src/bless-boot/bless-boot.c), for hosts without systemd. systemd-boot renames the
// entry it boots from X+LEFT[-DONE].conf to X+(LEFT-1)-(DONE+1).conf before it starts the
// kernel and stores the new name in the EFI variable LoaderBootCountPath. The booted
// system then renames that file:
//
//   - good: to X.conf, no counter (the entry is no longer on trial);
//   - bad: to X+0-DONE.conf (X+0.conf when DONE is 0): no tries left, DONE kept;
//   - indeterminate: back to the booted name, from the good or the bad one.
//
// Each rename is from the booted name, else from the other verb's name (a boot marked
// good can be marked bad and back); when the target already exists there is nothing to
// do.

// EFIVarsDir is where efivarfs is mounted.
const EFIVarsDir = "/sys/firmware/efi/efivars"

// loaderVendorGUID is the vendor GUID of systemd-boot's variables (the Boot Loader
// Interface).
const loaderVendorGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// BootCount is the booted entry's file and its counters, as systemd-bless-boot reads
// them from LoaderBootCountPath.
type BootCount struct {
	Path   string // the booted file, relative to the boot partition: loader/entries/X+2-1.conf
	Prefix string // Path up to the counter's '+': loader/entries/X
	Suffix string // what follows the counter: .conf
	Left   int
	Done   int
}

// Good is the file's name once the boot is marked good: the counter removed.
func (c *BootCount) Good() string { return c.Prefix + c.Suffix }

// Bad is the file's name once the boot is marked bad: no tries left, the tries done kept
// (bless-boot.c make_bad).
func (c *BootCount) Bad() string {
	if c.Done == 0 {
		return c.Prefix + "+0" + c.Suffix
	}
	return fmt.Sprintf("%s+0-%d%s", c.Prefix, c.Done, c.Suffix)
}

// ReadLoaderBootCountPath reads the EFI variable LoaderBootCountPath from the efivarfs
// directory efivars: 4 bytes of attributes, then a NUL-terminated UTF-16LE path with
// backslashes ("\loader\entries\X+2-1.conf"). It returns the path with slashes, and ""
// without error when the variable is not set (no boot counting in effect, or no
// systemd-boot).
func ReadLoaderBootCountPath(efivars string) (string, error) {
	name := filepath.Join(efivars, "LoaderBootCountPath-"+loaderVendorGUID)
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("reading LoaderBootCountPath: %w", err)
	}
	if len(data) < 4 || (len(data)-4)%2 != 0 {
		return "", fmt.Errorf("reading LoaderBootCountPath: %s: %d bytes: not attributes and UTF-16 text", name, len(data))
	}
	data = data[4:]
	u := make([]uint16, 0, len(data)/2)
	for i := 0; i+1 < len(data); i += 2 {
		c := uint16(data[i]) | uint16(data[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.ReplaceAll(string(utf16.Decode(u)), `\`, "/"), nil
}

// ParseBootCountPath reads a LoaderBootCountPath value (backslashes or slashes) as
// bless-boot.c acquire_boot_count_path does: an absolute, normalized path whose last
// component holds a counter after its last '+'.
func ParseBootCountPath(p string) (*BootCount, error) {
	p = strings.ReplaceAll(p, `\`, "/")
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
		return nil, fmt.Errorf("boot count path %q: not an absolute, normalized path", p)
	}
	dir, last := path.Split(p)
	plus := strings.LastIndexByte(last, '+')
	if plus < 0 {
		return nil, fmt.Errorf("boot count path %q: no counter", p)
	}
	rest := last[plus+1:]
	digits := func() (int, bool) {
		n := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
		v, ok := parseBootCounter(rest[:n])
		rest = rest[n:]
		return v, ok
	}
	left, ok := digits()
	if !ok {
		return nil, fmt.Errorf("boot count path %q: bad tries-left counter", p)
	}
	done := 0
	if strings.HasPrefix(rest, "-") {
		rest = rest[1:]
		if done, ok = digits(); !ok {
			return nil, fmt.Errorf("boot count path %q: bad tries-done counter", p)
		}
	}
	return &BootCount{Path: p[1:], Prefix: dir[1:] + last[:plus], Suffix: rest, Left: left, Done: done}, nil
}

// BootCountFromCmdline finds the booted entry in boot's loader/entries from the kernel
// command line, for when the boot loader set no LoaderBootCountPath (GRUB, or
// systemd-boot's path renamed since by a new set of entries): the entry whose
// composefs= digest the command line names and whose arguments are all on it, the most
// of them. It returns nil without error when that entry has no counter.
func BootCountFromCmdline(boot *os.Root, cmdline []byte) (*BootCount, error) {
	c := kargs.Parse(cmdline)
	id, _, err := ParseRootSelector(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotBooted, err)
	}
	entries, err := ReadBootSet(boot)
	if err != nil {
		return nil, err
	}
	found, best := -1, -1
	for i := range entries {
		opts := kargs.Parse([]byte(entries[i].Options))
		eid, _, err := ParseRootSelector(opts)
		if err != nil || eid != id {
			continue
		}
		if n := opts.Len(); n > best && argsOn(opts, c) {
			found, best = i, n
		}
	}
	if found < 0 {
		return nil, fmt.Errorf("%w: the command line names composefs=%s, which no boot entry with its arguments names", ErrNotBooted, id)
	}
	if !entries[found].Counting() {
		return nil, nil
	}
	return ParseBootCountPath("/" + bootLoaderDir + "/" + bootEntriesName + "/" + entries[found].FileName())
}

// Boot states, as `systemd-bless-boot status` prints them.
const (
	BootGood          = "good"
	BootBad           = "bad"
	BootIndeterminate = "indeterminate"
	BootClean         = "clean" // no boot counting in effect
)

// ErrBootStateUnknown means none of the booted entry's three names (booted, good, bad)
// is on the boot partition.
var ErrBootStateUnknown = errors.New("cannot find the booted entry's file under any of its names")

// BootCountState is what `systemd-bless-boot status` prints: clean when c is nil, else
// indeterminate when the booted file is still there, good or bad when it was renamed so.
func BootCountState(boot *os.Root, c *BootCount) (string, error) {
	if c == nil {
		return BootClean, nil
	}
	for _, s := range []struct{ name, state string }{{c.Path, BootIndeterminate}, {c.Good(), BootGood}, {c.Bad(), BootBad}} {
		if _, err := boot.Lstat(s.name); err == nil {
			return s.state, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%w: %s, %s, %s", ErrBootStateUnknown, c.Path, c.Good(), c.Bad())
}

// MarkBoot renames the booted entry's file for verb (good, bad or indeterminate) as
// systemd-bless-boot does, then syncs the directory and the filesystem. It reports
// whether it renamed anything: false when the file already has the target name. When
// none of the three names exists it returns ErrBootStateUnknown.
func MarkBoot(boot *os.Root, c *BootCount, verb string) (bool, error) {
	var target, source1, source2 string
	switch verb {
	case BootGood:
		target, source1, source2 = c.Good(), c.Path, c.Bad()
	case BootBad:
		target, source1, source2 = c.Bad(), c.Path, c.Good()
	case BootIndeterminate:
		target, source1, source2 = c.Path, c.Good(), c.Bad()
	default:
		return false, fmt.Errorf("marking the boot: unknown verb %q (good, bad or indeterminate)", verb)
	}
	dirName := path.Dir(c.Path)
	d, err := boot.Open(dirName)
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", dirName, err)
	}
	defer d.Close()
	fd := int(d.Fd())
	for _, src := range []string{source1, source2} {
		err := renameNoReplace(fd, path.Base(src), path.Base(target))
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if errors.Is(err, unix.EEXIST) {
			return false, nil // marked before
		}
		if err != nil {
			return false, fmt.Errorf("renaming %s to %s: %w", src, target, err)
		}
		if err := unix.Fsync(fd); err != nil {
			return false, fmt.Errorf("syncing %s: %w", dirName, err)
		}
		if err := unix.Syncfs(fd); err != nil {
			return false, fmt.Errorf("syncing the boot filesystem: %w", err)
		}
		return true, nil
	}
	if _, err := boot.Lstat(target); err == nil {
		return false, nil
	}
	return false, fmt.Errorf("%w: %s, %s, %s", ErrBootStateUnknown, c.Path, c.Good(), c.Bad())
}

// renameNoReplace renames from to to in the directory dirfd, failing with EEXIST when to
// exists. Where renameat2 has no RENAME_NOREPLACE (vfat before Linux 6.0) it checks,
// then renames; the caller holds the sysroot lock.
func renameNoReplace(dirfd int, from, to string) error {
	err := unix.Renameat2(dirfd, from, dirfd, to, unix.RENAME_NOREPLACE)
	if !noRenameFlags(err) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, to, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return unix.EEXIST
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	return unix.Renameat(dirfd, from, dirfd, to)
}
