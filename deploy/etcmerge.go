package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// MergeOption configures MergeEtc and MergeVar.
type MergeOption func(*mergeOptions)

type mergeOptions struct {
	log logrus.FieldLogger
}

// WithLogger sends the merge's summary (info) and its one warning about skipped special
// files to l. The default discards them.
func WithLogger(l logrus.FieldLogger) MergeOption {
	return func(o *mergeOptions) { o.log = l }
}

func newMergeOptions(opts []MergeOption) *mergeOptions {
	o := &mergeOptions{log: discardLogger()}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// MergeResult says what MergeEtc carried from the host's /etc into the new one.
type MergeResult struct {
	Added    []string // the host's additions, carried
	Modified []string // the host's modifications, carried
	Removed  []string // the host's deletions, applied (already absent in the new image or not)
	// Recreated are directories the new image dropped that hold carried changes: they
	// were made again with the host's mode, owner and xattrs.
	Recreated []string
	// Skipped are the FIFOs, sockets and devices the host added or changed: they are not
	// configuration and are not carried. As in ostree, they still count as the host's
	// change at their path: the new image's file there is removed, and a new image's
	// directory there is a conflict.
	Skipped []string
}

// Conflict is one path where the host's change and the new image cannot both hold.
type Conflict struct {
	Path    string
	Current string // what the host has there: "directory", "file", "symlink"
	New     string // what the new image has there
}

// MergeConflictError is returned by MergeEtc, before anything is written, when the host
// changed a non-directory (file, symlink, even a FIFO) where the new image has a
// directory, or has a directory it changed (or changed something in) where the new image
// has a non-directory.
type MergeConflictError struct {
	Paths     []string   // every conflicting path, sorted, relative to /etc
	Conflicts []Conflict // the same paths with what each side has
}

func (e *MergeConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cannot merge /etc: %d path(s) where the host's change and the new image's type differ:", len(e.Conflicts))
	for _, c := range e.Conflicts {
		if c.Current == "directory" {
			fmt.Fprintf(&b, " %s (host: directory with local changes, new image: %s);", c.Path, c.New)
		} else {
			fmt.Fprintf(&b, " %s (host: changed %s, new image: %s);", c.Path, c.Current, c.New)
		}
	}
	b.WriteString(" move the local change aside or restore the default (ociboot config-diff shows them), then retry")
	return b.String()
}

// MergeEtc makes target, an empty directory, the /etc of a new deployment: a copy of
// newEtc (the new image's /etc) with the host's changes (current, the live /etc, against
// pristine, the /etc of the image it booted) applied over it. The host's additions and
// modifications win whether or not the new image changed the path too; paths the host
// did not touch follow the new image; the host's deletions stay deleted. /etc/.updated
// is removed so that ConditionNeedsUpdate=/etc units run on first boot.
//
// Conflicts are looked for before anything is written: if there is one, MergeEtc returns
// a *MergeConflictError naming every one of them and target is untouched. On any other
// error target is left half written; the caller discards it. MergeEtc does not sync:
// the caller makes the deployment durable, once, before anything refers to it. The
// attributes of target itself are those of newEtc: like ostree, the merge compares what
// is in /etc, not /etc.
func MergeEtc(ctx context.Context, pristine, current, newEtc, target *os.Root, opts ...MergeOption) (*MergeResult, error) {
	o := newMergeOptions(opts)
	var trees [4]*tree
	for i, r := range []*os.Root{pristine, current, newEtc, target} {
		t, err := openTree(r)
		if err != nil {
			return nil, fmt.Errorf("%s /etc: %w", []string{"pristine", "current", "new", "target"}[i], err)
		}
		defer t.close()
		trees[i] = t
	}
	p, c, n, dst := trees[0], trees[1], trees[2], trees[3]
	if names, err := readNames(dst.fd); err != nil {
		return nil, fmt.Errorf("reading %s: %w", dst.name, err)
	} else if len(names) > 0 {
		return nil, fmt.Errorf("merging /etc into %s: the directory is not empty (it has %s)", dst.name, names[0])
	}
	diff, err := diffTrees(ctx, p, c)
	if err != nil {
		return nil, fmt.Errorf("comparing %s with %s: %w", c.name, p.name, err)
	}
	changed := changedPaths(diff)
	if err := checkConflicts(diff.current, changed, n); err != nil {
		return nil, err
	}
	if err := copyTree(ctx, n, dst); err != nil {
		return nil, fmt.Errorf("copying %s to %s: %w", n.name, dst.name, err)
	}
	res, err := applyEtc(ctx, diff, changed, c, dst)
	if err != nil {
		return nil, err
	}
	fd, err := dst.openDir("")
	if err == nil {
		err = removeAll(fd, ".updated")
		unix.Close(fd)
	}
	if err != nil {
		return nil, fmt.Errorf("removing .updated from %s: %w", dst.name, err)
	}
	if len(res.Skipped) > 0 {
		o.log.WithField("paths", res.Skipped).Warnf("Ignoring %d non-regular/non-symlink file(s) found during /etc merge: %s",
			len(res.Skipped), strings.Join(res.Skipped, ", "))
	}
	o.log.Infof("Copying /etc changes: %d modified, %d removed, %d added", len(res.Modified), len(res.Removed), len(res.Added))
	return res, nil
}

// changedPaths is Added and Modified in one sorted list: parents come before what they
// hold, so a directory exists with its attributes before anything is copied into it.
func changedPaths(d *EtcDiff) []string {
	out := slices.Concat(d.Added, d.Modified)
	slices.Sort(out)
	return out
}

// checkConflicts looks, for every path the host changed, at the new image's entries on
// its way: the first one that is not a directory decides. A host non-directory meeting a
// new directory at the same path conflicts; a host directory (changed itself or holding a
// change) meeting a new non-directory conflicts at that directory. Only the new tree is
// read, at the few paths involved.
func checkConflicts(cur *scan, changed []string, n *tree) error {
	newNodes := map[string]*node{}
	lookup := func(p string) (*node, error) {
		if nn, ok := newNodes[p]; ok {
			return nn, nil
		}
		nn, err := n.lookup(p)
		newNodes[p] = nn
		return nn, err
	}
	found := map[string]Conflict{}
	for _, p := range changed {
		for q := range prefixes(p) {
			nn, err := lookup(q)
			if err != nil {
				return fmt.Errorf("reading the new /etc: %w", err)
			}
			if nn == nil {
				break // the host's entries are made again from here down
			}
			cq := cur.nodes[q]
			if nn.isDir() != cq.isDir() && (cq.isDir() || q == p) {
				found[q] = Conflict{Path: q, Current: kindName(cq), New: kindName(nn)}
			}
			if !nn.isDir() {
				break
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	e := &MergeConflictError{}
	for p := range found {
		e.Paths = append(e.Paths, p)
	}
	slices.Sort(e.Paths)
	for _, p := range e.Paths {
		e.Conflicts = append(e.Conflicts, found[p])
	}
	return e
}

// prefixes yields "a", "a/b", "a/b/c" for "a/b/c".
func prefixes(p string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && !yield(p[:i]) {
				return
			}
		}
		yield(p)
	}
}

// applyEtc applies the host's changes to dst, a fresh copy of the new /etc: deletions
// first, as ostree does, then additions and modifications parent first.
func applyEtc(ctx context.Context, d *EtcDiff, changed []string, c, dst *tree) (*MergeResult, error) {
	res := &MergeResult{Removed: d.Removed}
	for _, p := range d.Removed {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir, name := splitPath(p)
		fd, err := dst.openDir(dir)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // not in the new image, or behind one of its symlinks: nothing to delete
		} else if err != nil {
			return nil, fmt.Errorf("deleting %s from the new /etc: %w", p, err)
		}
		err = removeAll(fd, name)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("deleting %s from the new /etc: %w", p, err)
		}
	}
	added := map[string]bool{}
	for _, p := range d.Added {
		added[p] = true
	}
	for _, p := range changed {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cn := d.current.nodes[p]
		if cn.special() {
			// Like ostree: the host's change replaces the new image's entry, but a FIFO,
			// socket or device is not configuration and is not made again.
			if err := unlinkLeaf(dst, p); err != nil {
				return nil, fmt.Errorf("replacing %s in the new /etc: %w", p, err)
			}
			res.Skipped = append(res.Skipped, p)
			continue
		}
		if err := carry(d.current, c, p, cn, dst, res); err != nil {
			return nil, fmt.Errorf("carrying %s into the new /etc: %w", p, err)
		}
		if added[p] {
			res.Added = append(res.Added, p)
		} else {
			res.Modified = append(res.Modified, p)
		}
	}
	return res, nil
}

// unlinkLeaf removes the non-directory p from dst if it is there; a directory is
// never removed (checkConflicts refused that case).
func unlinkLeaf(dst *tree, p string) error {
	dir, name := splitPath(p)
	fd, err := dst.openDir(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil // the new image has nothing there
	} else if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// carry puts the host's entry p (cn, in c) into dst in place of whatever the new image
// has there. A directory that exists in both is kept and given the host's attributes;
// its entries are carried one by one.
func carry(cur *scan, c *tree, p string, cn *node, dst *tree, res *MergeResult) error {
	dir, name := splitPath(p)
	fd, err := ensureDir(cur, c, dst, dir, res)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	exists := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	newIsDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case exists && cn.isDir() != newIsDir:
		// checkConflicts let it through: the new tree changed while we merged.
		return fmt.Errorf("the new /etc has a %s here (changed during the merge?)", kindName(&node{mode: st.Mode}))
	case exists && newIsDir:
		return setAttrs(fd, name, cn)
	case exists:
		if err := unix.Unlinkat(fd, name, 0); err != nil {
			return fmt.Errorf("replacing the new image's entry: %w", err)
		}
	}
	if err := createNode(c, p, cn, fd, name); err != nil {
		return err
	}
	if cn.isDir() {
		return setAttrs(fd, name, cn) // its times change as its entries arrive
	}
	return setTimes(fd, name, cn)
}

// ensureDir opens the directory rel of dst, making every missing directory on the way
// with the host's attributes: the new image dropped them, but they hold local changes.
func ensureDir(cur *scan, c, dst *tree, rel string, res *MergeResult) (int, error) {
	fd, err := dst.openDir(rel)
	if !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	fd, err = dst.openDir("")
	if err != nil {
		return -1, err
	}
	for q := range prefixes(rel) {
		_, name := splitPath(q)
		next, err := openChildDir(fd, name)
		if errors.Is(err, unix.ENOENT) {
			cn := cur.nodes[q]
			err = createNode(c, q, cn, fd, name)
			if err == nil {
				err = setAttrs(fd, name, cn)
			}
			if err == nil {
				res.Recreated = append(res.Recreated, q)
				next, err = openChildDir(fd, name)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("making directory %s: %w", q, err)
		}
		fd = next
	}
	return fd, nil
}
