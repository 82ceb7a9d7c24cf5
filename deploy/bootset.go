package deploy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ociboot/ociboot/internal/failpoint"
	"golang.org/x/sys/unix"
)

// The boot set is the whole of loader/entries: one entry per deployment kept, whose order
// is the boot order. It is never edited in place. A new set is written in full beside
// it, in loader/entries.staged, made durable, and then swapped in by one
// renameat2(RENAME_EXCHANGE) of the two directories; the old set, now under the staged
// name, is removed after that.
//
// Why the exchange. ociboot's boot partition is the ESP when systemd-boot reads the
// entries, so whatever replaces the set must work on vfat as well as on ext4 and xfs.
// ostree's way (loader a symlink to loader.0 or loader.1, a new symlink renamed over it)
// cannot: vfat has no symlinks, and ostree refuses /boot on vfat for that reason.
// Renaming the old directory away and the new one in takes two renames, and a crash
// between them leaves no loader/entries at all: a machine that does not boot. The
// exchange has no such instant: loader/entries names the old directory or the new one,
// never neither. vfat has RENAME_EXCHANGE since Linux 6.0 (it rewrites the two
// directory entries under the superblock lock), ext4, xfs, btrfs and tmpfs for longer;
// bootc's composefs backend finalizes the same way. Where the exchange is missing,
// CommitStagedBootSet fails with ErrExchangeUnsupported and changes nothing rather than
// fall back to the two renames.
//
// vfat has no journal, so a power cut while the kernel writes the two directory entries
// back could, in principle, leave both names pointing at one directory. Each set
// therefore carries a generation number (in the file .ociboot-set, which boot loaders
// skip: not a .conf file, and hidden), and the old set is removed only when the
// directory under the staged name holds an older generation than loader/entries. The
// generation also tells, after a crash, a staged set that awaits its commit (newer than
// loader/entries) from the old set an interrupted commit left behind (older), and a set
// whose writing was interrupted (no generation yet, since it is written last) from both.
//
// The set is the whole directory: entries put there by others are not carried over.
// Callers that want to keep one include it (ReadBootSet returns every entry).

const (
	bootLoaderDir     = "loader"
	bootEntriesName   = "entries"        // in loader/
	bootStagedName    = "entries.staged" // in loader/
	bootSetMarkerName = ".ociboot-set"   // in each set's directory
	bootSetMagic      = "ociboot-boot-set 1"
)

// ErrExchangeUnsupported means the boot filesystem cannot exchange two directories
// atomically, so the set of entries cannot be replaced without an instant in which there
// is none. Nothing was changed; the staged set stays until it is discarded.
var ErrExchangeUnsupported = errors.New("the boot filesystem cannot exchange two directories atomically " +
	"(renameat2 RENAME_EXCHANGE; vfat has it from Linux 6.0): not replacing the boot entries")

// ErrNoStagedBootSet means there is no complete staged set of entries to commit.
var ErrNoStagedBootSet = errors.New("no staged boot entries")

// bootCrashHook, when set (only by tests), is called after each step that changes the
// boot partition, so a test can kill the process there and check what a crash leaves.
var bootCrashHook func(step string)

func bootStep(step string) {
	if bootCrashHook != nil {
		bootCrashHook(step)
	}
	failpoint.Step("boot: " + step)
}

// WriteBootSet replaces the whole set of entries in boot's loader/entries with entries,
// atomically: StageBootSet, then CommitStagedBootSet. boot is the root of the partition
// the boot loader reads (the ESP for systemd-boot). A staged set waiting for its commit
// is replaced. A crash at any instant leaves the old set or the new one, each complete;
// calling WriteBootSet again completes the change.
func WriteBootSet(boot *os.Root, entries []BLSEntry) error {
	if err := StageBootSet(boot, entries); err != nil {
		return err
	}
	return CommitStagedBootSet(boot)
}

// StageBootSet writes entries, in full and durably, as loader/entries.staged, for a
// later CommitStagedBootSet (at shutdown, on a running host). A set staged before is
// replaced. The boot loader does not see the staged set.
func StageBootSet(boot *os.Root, entries []BLSEntry) error {
	if len(entries) == 0 {
		return errors.New("staging boot entries: an empty set would leave nothing to boot")
	}
	names := map[string]string{}
	for i := range entries {
		e := &entries[i]
		if err := e.Validate(); err != nil {
			return fmt.Errorf("staging boot entries: %w", err)
		}
		// vfat folds case, and systemd-boot lowercases IDs: names differing only in case clash.
		if prev, dup := names[e.ID()]; dup {
			return fmt.Errorf("staging boot entries: %s and %s have the same name", prev, e.FileName())
		}
		names[e.ID()] = e.FileName()
	}
	loader, err := openLoader(boot, true)
	if err != nil {
		return err
	}
	defer loader.Close()
	cur, err := currentGeneration(loader)
	if err != nil {
		return err
	}
	if err := removeStaged(loader, cur); err != nil {
		return err
	}
	bootStep("stage: previous staged set removed")
	if err := unix.Mkdirat(loader.fd(), bootStagedName, 0o755); err != nil {
		return fmt.Errorf("creating loader/%s: %w", bootStagedName, err)
	}
	bootStep("stage: directory created")
	dir, err := loader.openDir(bootStagedName)
	if err != nil {
		return err
	}
	defer dir.Close()
	for i := range entries {
		if err := writeDurable(dir, entries[i].FileName(), entries[i].Bytes()); err != nil {
			return fmt.Errorf("writing loader/%s/%s: %w", bootStagedName, entries[i].FileName(), err)
		}
	}
	// The generation goes last: a staged set without one was interrupted.
	marker := fmt.Sprintf("%s\ngeneration %d\n", bootSetMagic, cur+1)
	if err := writeDurable(dir, bootSetMarkerName, []byte(marker)); err != nil {
		return fmt.Errorf("writing loader/%s/%s: %w", bootStagedName, bootSetMarkerName, err)
	}
	if err := unix.Fsync(dir.fd()); err != nil {
		return fmt.Errorf("syncing loader/%s: %w", bootStagedName, err)
	}
	// One syncfs: vfat makes a directory's entries durable through the FAT and the
	// parent's directory, which no fsync of the directory alone promises to write.
	if err := unix.Syncfs(loader.fd()); err != nil {
		return fmt.Errorf("syncing the boot filesystem: %w", err)
	}
	bootStep("stage: synced")
	return nil
}

// CommitStagedBootSet makes the staged set the boot set: it exchanges loader/entries.staged
// with loader/entries (or renames it into place when there is none), syncs, and removes
// the old set. Without a complete staged set newer than loader/entries it returns
// ErrNoStagedBootSet (after removing what a crash left under the staged name).
func CommitStagedBootSet(boot *os.Root) error {
	loader, err := openLoader(boot, false)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoStagedBootSet
	} else if err != nil {
		return err
	}
	defer loader.Close()
	cur, err := currentGeneration(loader)
	if err != nil {
		return err
	}
	staged, complete, err := bootSetGeneration(loader, bootStagedName)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoStagedBootSet
	} else if err != nil {
		return err
	}
	if !complete || staged <= cur {
		// Interrupted while being written, or the old set of an interrupted commit.
		if err := removeStaged(loader, cur); err != nil {
			return err
		}
		return ErrNoStagedBootSet
	}
	_, err = loader.stat(bootEntriesName)
	switch {
	case err == nil:
		err = unix.Renameat2(loader.fd(), bootStagedName, loader.fd(), bootEntriesName, unix.RENAME_EXCHANGE)
		if noRenameFlags(err) {
			return fmt.Errorf("committing loader/%s: %w (%v)", bootStagedName, ErrExchangeUnsupported, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		err = unix.Renameat2(loader.fd(), bootStagedName, loader.fd(), bootEntriesName, unix.RENAME_NOREPLACE)
		if noRenameFlags(err) {
			// No RENAME_NOREPLACE here; loader/entries was just seen absent and the
			// caller holds the sysroot lock.
			err = unix.Renameat(loader.fd(), bootStagedName, loader.fd(), bootEntriesName)
		}
	}
	if err != nil {
		return fmt.Errorf("committing loader/%s as loader/%s: %w", bootStagedName, bootEntriesName, err)
	}
	bootStep("commit: exchanged")
	if err := unix.Syncfs(loader.fd()); err != nil {
		return fmt.Errorf("syncing the boot filesystem: %w", err)
	}
	bootStep("commit: synced")
	return removeOldBootSet(loader, staged)
}

// removeOldBootSet removes the set the exchange moved under the staged name; gen is the
// generation now in loader/entries.
func removeOldBootSet(loader *blsDir, gen uint64) error {
	if err := removeStaged(loader, gen); err != nil {
		return err
	}
	if err := unix.Fsync(loader.fd()); err != nil {
		return fmt.Errorf("syncing loader/: %w", err)
	}
	bootStep("commit: done")
	return nil
}

// removeStaged removes loader/entries.staged, unless it holds live, the generation of
// loader/entries: then both names lead to one directory (an exchange torn by a power cut
// on vfat, which has no journal), and removing it would remove the boot set itself.
func removeStaged(loader *blsDir, live uint64) error {
	gen, complete, err := bootSetGeneration(loader, bootStagedName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if complete && live > 0 && gen == live {
		return fmt.Errorf("loader/%s and loader/%s both hold generation %d: the boot filesystem "+
			"may have them share one directory; not removing either (check it with fsck)",
			bootStagedName, bootEntriesName, gen)
	}
	if err := removeBootSetDir(loader, bootStagedName); err != nil {
		return fmt.Errorf("removing loader/%s: %w", bootStagedName, err)
	}
	return nil
}

// DiscardStagedBootSet removes a staged set (a rollback drops a staged deployment); it
// is not an error when there is none.
func DiscardStagedBootSet(boot *os.Root) error {
	loader, err := openLoader(boot, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer loader.Close()
	cur, err := currentGeneration(loader)
	if err != nil {
		return err
	}
	if err := removeStaged(loader, cur); err != nil {
		return err
	}
	return unix.Fsync(loader.fd())
}

// ReadBootSet reads loader/entries in the order systemd-boot boots them (SortBLSEntries):
// the first is the default. No loader/entries is an empty set.
func ReadBootSet(boot *os.Root) ([]BLSEntry, error) {
	return readBootSetDir(boot, bootEntriesName)
}

// ReadStagedBootSet reads the staged set, if a complete one newer than loader/entries
// waits for its commit, in boot order; otherwise it returns nil. What an interrupted
// stage or commit left is not a staged set.
func ReadStagedBootSet(boot *os.Root) ([]BLSEntry, error) {
	pending, err := stagedPending(boot)
	if err != nil || !pending {
		return nil, err
	}
	return readBootSetDir(boot, bootStagedName)
}

// stagedPending reports whether loader/entries.staged is a complete set newer than
// loader/entries.
func stagedPending(boot *os.Root) (bool, error) {
	loader, err := openLoader(boot, false)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer loader.Close()
	cur, err := currentGeneration(loader)
	if err != nil {
		return false, err
	}
	staged, complete, err := bootSetGeneration(loader, bootStagedName)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil && complete && staged > cur, err
}

func readBootSetDir(boot *os.Root, name string) ([]BLSEntry, error) {
	rel := bootLoaderDir + "/" + name
	d, err := boot.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("opening %s: %w", rel, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	var out []BLSEntry
	for _, n := range names {
		if n == "" || n[0] == '.' || len(n) < 5 || !strings.EqualFold(n[len(n)-5:], ".conf") {
			continue // not an entry for either boot loader
		}
		f, err := boot.OpenFile(rel+"/"+n, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s/%s: %w", rel, n, err)
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			if err == nil {
				continue // a directory named *.conf is not an entry
			}
			return nil, fmt.Errorf("%s/%s: %w", rel, n, err)
		}
		data, err := io.ReadAll(io.LimitReader(f, blsMaxEntrySize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s/%s: %w", rel, n, err)
		}
		e, err := ParseBLSEntry(n, data)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", rel, err)
		}
		out = append(out, *e)
	}
	SortBLSEntries(out)
	return out, nil
}

// blsDir is a directory of the boot partition held open for *at calls.
type blsDir struct {
	f    *os.File
	name string // relative to the boot partition, for messages
}

func (d *blsDir) fd() int      { return int(d.f.Fd()) }
func (d *blsDir) Close() error { return d.f.Close() }

func (d *blsDir) stat(name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: d.name + "/" + name, Err: err}
	}
	return &st, nil
}

// openDir opens the subdirectory name, refusing a symlink.
func (d *blsDir) openDir(name string) (*blsDir, error) {
	fd, err := openChildDir(d.fd(), name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.name + "/" + name, Err: err}
	}
	return &blsDir{f: os.NewFile(uintptr(fd), name), name: d.name + "/" + name}, nil
}

// openLoader opens the partition's loader/ directory, creating it when create is set.
func openLoader(boot *os.Root, create bool) (*blsDir, error) {
	if create {
		if err := boot.Mkdir(bootLoaderDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", bootLoaderDir, err)
		}
	}
	// Not through a symlink: a loader/ that is one (ostree's loader -> loader.1) is a
	// layout ociboot does not manage.
	if fi, err := boot.Lstat(bootLoaderDir); err != nil {
		return nil, fmt.Errorf("opening %s: %w", bootLoaderDir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("opening %s: %s, not a directory", bootLoaderDir, fi.Mode().Type())
	}
	f, err := boot.Open(bootLoaderDir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", bootLoaderDir, err)
	}
	return &blsDir{f: f, name: bootLoaderDir}, nil
}

// currentGeneration is the generation of loader/entries: 0 when there is none, or when
// it was not written by ociboot (no marker).
func currentGeneration(loader *blsDir) (uint64, error) {
	gen, complete, err := bootSetGeneration(loader, bootEntriesName)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !complete {
		return 0, nil
	}
	return gen, err
}

// bootSetGeneration reads the generation of the set in loader/name. complete is false
// when the set has no readable marker: its writing was interrupted (or, for
// loader/entries, someone else wrote it). A missing directory is fs.ErrNotExist.
func bootSetGeneration(loader *blsDir, name string) (gen uint64, complete bool, err error) {
	dir, err := loader.openDir(name)
	if err != nil {
		return 0, false, err
	}
	defer dir.Close()
	fd, err := unix.Openat(dir.fd(), bootSetMarkerName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("opening %s/%s: %w", dir.name, bootSetMarkerName, err)
	}
	buf := make([]byte, 128)
	n, err := readFull(fd, buf)
	unix.Close(fd)
	if err != nil {
		return 0, false, fmt.Errorf("reading %s/%s: %w", dir.name, bootSetMarkerName, err)
	}
	// A marker cut short (a crash between its creation and its write) is no marker.
	rest, ok := strings.CutPrefix(string(buf[:n]), bootSetMagic+"\ngeneration ")
	digits, ok2 := strings.CutSuffix(rest, "\n")
	gen, perr := strconv.ParseUint(digits, 10, 64)
	if !ok || !ok2 || perr != nil {
		return 0, false, nil
	}
	return gen, true, nil
}

// writeDurable creates name in dir (it must not exist) with data and fsyncs it.
func writeDurable(dir *blsDir, name string, data []byte) error {
	fd, err := unix.Openat(dir.fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	bootStep("write: created " + name)
	if _, err := f.Write(data); err != nil {
		return err
	}
	bootStep("write: wrote " + name)
	if err := f.Sync(); err != nil {
		return err
	}
	bootStep("write: synced " + name)
	return nil
}

// removeBootSetDir removes the set loader/name, marker first so that a set interrupted
// while being removed never looks complete; an absent directory is not an error.
func removeBootSetDir(loader *blsDir, name string) error {
	dir, err := loader.openDir(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.Unlinkat(dir.fd(), bootSetMarkerName, 0); err == nil {
		bootStep("remove: marker of " + name)
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s/%s: %w", dir.name, bootSetMarkerName, err)
	}
	names, err := readNames(dir.fd())
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir.name, err)
	}
	for _, n := range names {
		if err := removeAll(dir.fd(), n); err != nil {
			return fmt.Errorf("removing %s/%s: %w", dir.name, n, err)
		}
		bootStep("remove: " + name + "/" + n)
	}
	if err := unix.Unlinkat(loader.fd(), name, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("removing %s: %w", dir.name, err)
	}
	bootStep("remove: " + name)
	return nil
}

// RefreshStagedCounters gives the entries of the staged set the boot counters their twins
// (same options, kernel and initrd) in loader/entries have now. A staged set copies the
// entries' counters when it is made; the boot can be marked good (bless-boot) after that,
// and committing the copy would put the booted entry back on trial. The staged
// deployment's own entry, the first, is new and keeps its counter. Each change is a
// rename inside the staged set, which is not live: a crash leaves some counters
// refreshed, which the next call completes. It returns how many it changed.
func RefreshStagedCounters(boot *os.Root) (int, error) {
	staged, err := ReadStagedBootSet(boot)
	if err != nil || len(staged) < 2 {
		return 0, err
	}
	cur, err := ReadBootSet(boot)
	if err != nil {
		return 0, err
	}
	loader, err := openLoader(boot, false)
	if err != nil {
		return 0, err
	}
	defer loader.Close()
	dir, err := loader.openDir(bootStagedName)
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	n := 0
	for i := 1; i < len(staged); i++ {
		e := &staged[i]
		j := slices.IndexFunc(cur, func(c BLSEntry) bool {
			return c.Options == e.Options && c.Linux == e.Linux && slices.Equal(c.Initrd, e.Initrd)
		})
		if j < 0 || (cur[j].TriesLeft == e.TriesLeft && cur[j].TriesDone == e.TriesDone) {
			continue
		}
		from := e.FileName()
		e.TriesLeft, e.TriesDone = cur[j].TriesLeft, cur[j].TriesDone
		if err := unix.Renameat(dir.fd(), from, dir.fd(), e.FileName()); err != nil {
			return n, fmt.Errorf("renaming loader/%s/%s to %s: %w", bootStagedName, from, e.FileName(), err)
		}
		n++
	}
	if n > 0 {
		if err := unix.Fsync(dir.fd()); err != nil {
			return n, fmt.Errorf("syncing loader/%s: %w", bootStagedName, err)
		}
	}
	return n, nil
}
