package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// VarResult says what MergeVar did to the host's /var, as slash-separated paths relative
// to /var, each list sorted.
type VarResult struct {
	// Added are paths the new image ships that neither the old image nor the host had;
	// every entry of an added directory is listed.
	Added []string
	// Updated are paths the host had left exactly as the old image shipped them, now as
	// the new image ships them (entries of a directory that replaced a file are Added).
	Updated []string
	// Kept are paths the new image changed or added where the host's own version (or its
	// deletion) stays; below a kept directory nothing more is listed.
	Kept []string
	// Dropped are paths the old image shipped, the new one does not, and the host still
	// has: they are not removed. A dropped directory is listed once.
	Dropped []string
	// Skipped are FIFOs, sockets and devices in the new image's /var: not copied.
	Skipped []string
}

// MergeVar brings what a new image changed in /var to the host's /var, which every
// deployment shares, without ever deleting anything of the host's: a path the new image
// adds that the host lacks is added; a path the host left exactly as the old image
// shipped it (type, content, symlink target, mode, owner, xattrs but the ignored ones)
// and that the new image changed is replaced by the new version; every other path stays
// as the host has it. Unlike bootc, which applies an image's /var only at install.
//
// oldImageVar may be nil (nothing was shipped before: an install). Only the paths the
// images ship are looked at in hostVar, which may be large. Every change is first
// written under a temporary name beside its place and synced, then renamed into place
// and synced again: a crash leaves each path old or new (and perhaps a stray
// .ociboot-var-* temporary), never half written.
func MergeVar(ctx context.Context, oldImageVar, newImageVar, hostVar *os.Root, opts ...MergeOption) (*VarResult, error) {
	o := newMergeOptions(opts)
	m := &varMerge{ctx: ctx, old: &scan{nodes: map[string]*node{}}, skip: map[string]bool{}, res: &VarResult{}}
	var err error
	if oldImageVar != nil {
		if m.oldT, err = openTree(oldImageVar); err != nil {
			return nil, fmt.Errorf("old image /var: %w", err)
		}
		defer m.oldT.close()
		if m.old, err = scanTree(ctx, m.oldT); err != nil {
			return nil, err
		}
	}
	if m.newT, err = openTree(newImageVar); err != nil {
		return nil, fmt.Errorf("new image /var: %w", err)
	}
	defer m.newT.close()
	if m.new, err = scanTree(ctx, m.newT); err != nil {
		return nil, err
	}
	if m.host, err = openTree(hostVar); err != nil {
		return nil, fmt.Errorf("host /var: %w", err)
	}
	defer m.host.close()

	m.oldNew, m.oldHost, m.hostNew = newComparer(m.oldT, m.newT), newComparer(m.oldT, m.host), newComparer(m.host, m.newT)
	if err := m.plan(); err != nil {
		m.cleanup()
		return nil, err
	}
	if err := m.dropped(); err != nil {
		m.cleanup()
		return nil, err
	}
	if err := m.commit(); err != nil {
		m.cleanup()
		return nil, err
	}
	r := m.res
	for _, l := range [][]string{r.Added, r.Updated, r.Kept, r.Dropped, r.Skipped} {
		slices.Sort(l)
	}
	if len(r.Skipped) > 0 {
		o.log.WithField("paths", r.Skipped).Warnf("Ignoring %d non-regular/non-symlink file(s) in the new image's /var: %s",
			len(r.Skipped), strings.Join(r.Skipped, ", "))
	}
	o.log.Infof("Merging /var: %d added, %d updated, %d kept as the host has them, %d no longer shipped",
		len(r.Added), len(r.Updated), len(r.Kept), len(r.Dropped))
	return r, nil
}

type varMerge struct {
	ctx              context.Context
	oldT, newT, host *tree
	oldNew, oldHost  *comparer
	hostNew          *comparer
	old, new         *scan
	skip             map[string]bool // paths of new not to descend into
	staged           []stagedChange
	res              *VarResult
}

// stagedChange is one change written under tmp in the host directory dir, waiting to be
// put at dir/name.
type stagedChange struct {
	dir, name, tmp string
	n              *node
	how            int // stageAdd, stageReplace, stageAttrs
}

const (
	stageAdd     = iota // rename over nothing: the host lacks the path
	stageReplace        // replace a host leaf the host never changed
	stageAttrs          // a directory's mode, owner and xattrs, set in place at commit
)

func (m *varMerge) skipped(p string) bool {
	for q := range prefixes(p) {
		if m.skip[q] {
			return true
		}
	}
	return false
}

// changedInNew reports whether the new image changed p against the old one.
func (m *varMerge) changedInNew(p string) (bool, error) {
	on, nn := m.old.nodes[p], m.new.nodes[p]
	if on == nil || nn == nil {
		return on != nn, nil
	}
	eq, err := m.oldNew.same(p, on, p, nn)
	return !eq, err
}

// subtreeChanged reports whether the new image changed p or anything below it.
func (m *varMerge) subtreeChanged(p string) (bool, error) {
	if c, err := m.changedInNew(p); c || err != nil {
		return c, err
	}
	i, _ := slices.BinarySearch(m.new.paths, p+"/")
	for _, q := range m.new.paths[i:] {
		if !strings.HasPrefix(q, p+"/") {
			break
		}
		if c, err := m.changedInNew(q); c || err != nil {
			return c, err
		}
	}
	return false, nil
}

func (m *varMerge) plan() error {
	for _, p := range m.new.paths {
		if err := m.ctx.Err(); err != nil {
			return err
		}
		if m.skipped(p) {
			continue
		}
		if err := m.planPath(p); err != nil {
			return fmt.Errorf("merging /var/%s: %w", p, err)
		}
	}
	return nil
}

func (m *varMerge) planPath(p string) error {
	nn, on := m.new.nodes[p], m.old.nodes[p]
	if nn.special() {
		m.res.Skipped = append(m.res.Skipped, p)
		return nil
	}
	hn, err := m.host.lookup(p)
	if err != nil {
		return err
	}
	changed, err := m.changedInNew(p)
	if err != nil {
		return err
	}
	switch {
	case hn == nil && on != nil: // the host deleted what the old image shipped
		m.skip[p] = true
		if c, err := m.subtreeChanged(p); c || err != nil {
			m.res.Kept = append(m.res.Kept, p)
			return err
		}
	case hn == nil:
		m.skip[p] = true
		m.res.Added = append(m.res.Added, p)
		return m.stage(p, nn, stageAdd)
	case hn.isDir() && nn.isDir():
		if on != nil && on.isDir() && sameMeta(hn, on) && !sameMeta(nn, on) {
			m.res.Updated = append(m.res.Updated, p)
			dir, name := splitPath(p)
			m.staged = append(m.staged, stagedChange{dir: dir, name: name, n: nn, how: stageAttrs})
		} else if changed && !sameMeta(hn, nn) {
			m.res.Kept = append(m.res.Kept, p)
		}
	case hn.isDir(): // a directory is never replaced: it may hold the host's data
		if changed {
			m.res.Kept = append(m.res.Kept, p)
		}
	default:
		untouched := false
		if on != nil && !on.isDir() {
			if untouched, err = m.oldHost.same(p, on, p, hn); err != nil {
				return err
			}
		}
		if nn.isDir() {
			m.skip[p] = true // copied whole, or the host's leaf hides it
		}
		if untouched && changed {
			m.res.Updated = append(m.res.Updated, p)
			return m.stage(p, nn, stageReplace)
		}
		if nn.isDir() && !changed { // what the new image changed below is hidden by the host's leaf
			if changed, err = m.subtreeChanged(p); err != nil {
				return err
			}
		}
		if changed {
			eq, err := m.hostNew.same(p, hn, p, nn)
			if err == nil && !eq {
				m.res.Kept = append(m.res.Kept, p)
			}
			return err
		}
	}
	return nil
}

// stage writes the new image's p (and all below it) under a temporary name beside it.
func (m *varMerge) stage(p string, nn *node, how int) error {
	dir, name := splitPath(p)
	fd, err := m.host.openDir(dir)
	if err != nil {
		return fmt.Errorf("opening the host's %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := ".ociboot-var-" + hex.EncodeToString(rnd[:])
	m.staged = append(m.staged, stagedChange{dir: dir, name: name, tmp: tmp, n: nn, how: how})
	if err := createNode(m.newT, p, nn, fd, tmp); err != nil {
		return err
	}
	if nn.isDir() {
		keep := func(q string, n *node) bool {
			if n.special() {
				m.res.Skipped = append(m.res.Skipped, q)
				return false
			}
			m.res.Added = append(m.res.Added, q)
			return true
		}
		sfd, err := m.newT.openDir(p)
		if err != nil {
			return fmt.Errorf("opening the new image's %s: %w", p, err)
		}
		defer unix.Close(sfd)
		tfd, err := openChildDir(fd, tmp)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		if err := copyDir(m.ctx, m.newT, sfd, p, tfd, keep); err != nil {
			return err
		}
		if err := setAttrs(fd, tmp, nn); err != nil {
			return err
		}
	}
	return setTimes(fd, tmp, nn)
}

// dropped lists what the old image shipped, the new one does not, and the host keeps.
func (m *varMerge) dropped() error {
	for _, p := range m.old.paths {
		dir, _ := splitPath(p)
		if m.new.nodes[p] != nil || dir != "" && (m.new.nodes[dir] == nil || !m.new.nodes[dir].isDir()) {
			continue // shipped still, or below a directory the new image dropped or replaced
		}
		hn, err := m.host.lookup(p)
		if err != nil {
			return fmt.Errorf("looking for /var/%s: %w", p, err)
		}
		if hn != nil {
			m.res.Dropped = append(m.res.Dropped, p)
		}
	}
	return nil
}

// commit makes the staged changes durable, puts them in place, and makes that durable.
func (m *varMerge) commit() error {
	if len(m.staged) == 0 {
		return nil
	}
	if err := unix.Syncfs(m.host.fd); err != nil {
		return fmt.Errorf("syncing %s: %w", m.host.name, err)
	}
	for i, s := range m.staged {
		if err := m.put(s); err != nil {
			return fmt.Errorf("putting /var/%s in place: %w", joinPath(s.dir, s.name), err)
		}
		m.staged[i].tmp = "" // nothing left to clean up
	}
	if err := unix.Syncfs(m.host.fd); err != nil {
		return fmt.Errorf("syncing %s: %w", m.host.name, err)
	}
	return nil
}

func (m *varMerge) put(s stagedChange) error {
	fd, err := m.host.openDir(s.dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch {
	case s.how == stageAttrs:
		return setAttrs(fd, s.name, s.n)
	case s.how == stageAdd:
		// NOREPLACE: if the host made the path since we looked, its version stays.
		err := unix.Renameat2(fd, s.tmp, fd, s.name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			p := joinPath(s.dir, s.name)
			m.res.Added = slices.DeleteFunc(m.res.Added, func(q string) bool { return q == p || strings.HasPrefix(q, p+"/") })
			m.res.Kept = append(m.res.Kept, p)
			return removeAll(fd, s.tmp)
		}
		return err
	case s.n.isDir():
		// A directory cannot be renamed over a file: swap them, then drop the old leaf.
		if err := unix.Renameat2(fd, s.tmp, fd, s.name, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		return removeAll(fd, s.tmp)
	default:
		return unix.Renameat(fd, s.tmp, fd, s.name)
	}
}

// cleanup removes whatever is still staged after a failure.
func (m *varMerge) cleanup() {
	for _, s := range m.staged {
		if s.tmp == "" {
			continue
		}
		if fd, err := m.host.openDir(s.dir); err == nil {
			removeAll(fd, s.tmp)
			unix.Close(fd)
		}
	}
}
