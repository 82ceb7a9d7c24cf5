package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// EtcDiff is what the host changed in its /etc against the pristine one, as
// slash-separated paths relative to /etc, each list sorted.
type EtcDiff struct {
	// Added are paths the pristine tree lacks; every descendant of an added directory is
	// listed too, so each can be carried on its own.
	Added []string
	// Modified are paths whose type, content, symlink target, mode, owner or xattrs
	// (but security.selinux, security.ima and security.evm: see the package doc)
	// differ. A directory that replaced a non-directory is modified and its entries
	// are added; a non-directory that replaced a directory is modified and what was
	// below it is not listed.
	Modified []string
	// Removed are paths the host deleted; a removed directory is listed once.
	Removed []string

	pristine, current *scan // what MergeEtc reuses
}

// ChangeKind is the letter ostree admin config-diff prints for a change.
type ChangeKind byte

const (
	ChangeAdded    ChangeKind = 'A'
	ChangeModified ChangeKind = 'M'
	ChangeRemoved  ChangeKind = 'D'
)

// Change is one line of a config diff.
type Change struct {
	Kind ChangeKind
	Path string
}

// Changes returns every change of d in one list sorted by path.
func (d *EtcDiff) Changes() []Change {
	var out []Change
	for _, l := range []struct {
		k     ChangeKind
		paths []string
	}{{ChangeAdded, d.Added}, {ChangeModified, d.Modified}, {ChangeRemoved, d.Removed}} {
		for _, p := range l.paths {
			out = append(out, Change{l.k, p})
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

// DiffEtc compares the host's live /etc (current) with the pristine /etc of the image it
// booted. Neither tree is written; no symlink in either is followed.
func DiffEtc(ctx context.Context, pristine, current *os.Root) (*EtcDiff, error) {
	p, err := openTree(pristine)
	if err != nil {
		return nil, fmt.Errorf("pristine /etc: %w", err)
	}
	defer p.close()
	c, err := openTree(current)
	if err != nil {
		return nil, fmt.Errorf("current /etc: %w", err)
	}
	defer c.close()
	return diffTrees(ctx, p, c)
}

func diffTrees(ctx context.Context, p, c *tree) (*EtcDiff, error) {
	var ps, cs *scan
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { ps, err = scanTree(gctx, p); return err })
	g.Go(func() (err error) { cs, err = scanTree(gctx, c); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	d := &EtcDiff{pristine: ps, current: cs}
	// Metadata decides most paths; the bytes of the files whose metadata agree are
	// compared by a few workers, since each costs a handful of system calls.
	modified := make([]bool, len(cs.paths))
	var todo []int
	for i, path := range cs.paths {
		cn, pn := cs.nodes[path], ps.nodes[path]
		switch {
		case pn == nil:
		case !sameMeta(pn, cn):
			modified[i] = true
		case cn.isReg() && cn.size > 0:
			todo = append(todo, i)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), 8, len(todo)/32+1)
	g, gctx = errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			cmp := newComparer(p, c)
			for k := w; k < len(todo); k += workers {
				if err := gctx.Err(); err != nil {
					return err
				}
				i := todo[k]
				eq, err := cmp.sameContent(cs.paths[i], cs.paths[i], cs.nodes[cs.paths[i]].size)
				if err != nil {
					return fmt.Errorf("comparing %s: %w", cs.paths[i], err)
				}
				modified[i] = !eq
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, path := range cs.paths {
		if ps.nodes[path] == nil {
			d.Added = append(d.Added, path)
		} else if modified[i] {
			d.Modified = append(d.Modified, path)
		}
	}
	for _, path := range ps.paths {
		dir, _ := splitPath(path)
		parent := cs.nodes[dir]
		// Below a removed directory or a directory the host replaced by a file, the one
		// entry for that directory says it all.
		if cs.nodes[path] == nil && (dir == "" || parent != nil && parent.isDir()) {
			d.Removed = append(d.Removed, path)
		}
	}
	return d, nil
}

// scan is one tree read into memory: its entries by path, and the paths sorted, so a
// directory comes before everything in it.
type scan struct {
	paths []string
	nodes map[string]*node
}

func scanTree(ctx context.Context, t *tree) (*scan, error) {
	fd, err := t.openDir("")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", t.name, err)
	}
	defer unix.Close(fd)
	s := &scan{nodes: map[string]*node{}}
	if err := s.walk(ctx, t, fd, ""); err != nil {
		return nil, err
	}
	slices.Sort(s.paths)
	return s, nil
}

func (s *scan) walk(ctx context.Context, t *tree, dirfd int, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := readNames(dirfd)
	if err != nil {
		return fmt.Errorf("reading directory %q of %s: %w", rel, t.name, err)
	}
	for _, name := range names {
		p := joinPath(rel, name)
		n, err := statNode(dirfd, name)
		if errors.Is(err, unix.ENOENT) {
			continue // deleted since the directory was read: a live /etc moves
		} else if err != nil {
			return fmt.Errorf("reading %s in %s: %w", p, t.name, err)
		}
		s.nodes[p] = n
		s.paths = append(s.paths, p)
		if !n.isDir() {
			continue
		}
		cfd, err := openChildDir(dirfd, name)
		if err != nil {
			return fmt.Errorf("opening %s in %s: %w", p, t.name, err)
		}
		err = s.walk(ctx, t, cfd, p)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}
