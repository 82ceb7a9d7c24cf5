package deploy

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// CopyTree copies the tree src into the empty directory dst verbatim: types, bytes,
// symlink targets (never followed), modes, owners, xattrs, device numbers and times,
// and the attributes of src's root onto dst's. Hard links become separate files, as
// ostree's copy of /usr/etc does; nothing in the merge relies on them.
func CopyTree(ctx context.Context, src, dst *os.Root) error {
	s, err := openTree(src)
	if err != nil {
		return err
	}
	defer s.close()
	d, err := openTree(dst)
	if err != nil {
		return err
	}
	defer d.close()
	return copyTree(ctx, s, d)
}

func copyTree(ctx context.Context, s, d *tree) error {
	sfd, err := s.openDir("")
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.name, err)
	}
	defer unix.Close(sfd)
	dfd, err := d.openDir("")
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.name, err)
	}
	defer unix.Close(dfd)
	// A few workers copy the root's entries, a subtree each: the cost is system calls,
	// which overlap well.
	names, err := readNames(sfd)
	if err != nil {
		return fmt.Errorf("reading %s: %w", s.name, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(runtime.GOMAXPROCS(0), 8))
	for _, name := range names {
		g.Go(func() error { return copyEntry(gctx, s, sfd, "", name, dfd, nil) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	root, err := statNode(sfd, ".")
	if err == nil {
		err = setAttrs(dfd, ".", root)
	}
	if err == nil {
		err = setTimes(dfd, ".", root)
	}
	if err != nil {
		return fmt.Errorf("copying the attributes of %s to %s: %w", s.name, d.name, err)
	}
	return nil
}

// copyDir copies the entries of directory rel of s (open as sfd) into dfd, those keep
// accepts (all if keep is nil). A directory gets its mode, owner and times after its
// entries, so a read-only one can be filled.
func copyDir(ctx context.Context, s *tree, sfd int, rel string, dfd int, keep func(string, *node) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := readNames(sfd)
	if err != nil {
		return fmt.Errorf("reading directory %q of %s: %w", rel, s.name, err)
	}
	for _, name := range names {
		if err := copyEntry(ctx, s, sfd, rel, name, dfd, keep); err != nil {
			return err
		}
	}
	return nil
}

// copyEntry copies the entry name of directory rel of s (open as sfd) into dfd.
func copyEntry(ctx context.Context, s *tree, sfd int, rel, name string, dfd int, keep func(string, *node) bool) error {
	p := joinPath(rel, name)
	n, err := statNode(sfd, name)
	if err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	if keep != nil && !keep(p, n) {
		return nil
	}
	if err := createNode(s, p, n, dfd, name); err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	if n.isDir() {
		if err := copySubdir(ctx, s, sfd, p, dfd, name, keep); err != nil {
			return err
		}
		err = setAttrs(dfd, name, n)
	}
	if err == nil {
		err = setTimes(dfd, name, n)
	}
	if err != nil {
		return fmt.Errorf("copying %s: %w", p, err)
	}
	return nil
}

func copySubdir(ctx context.Context, s *tree, sfd int, rel string, dfd int, name string, keep func(string, *node) bool) error {
	csfd, err := openChildDir(sfd, name)
	if err != nil {
		return fmt.Errorf("opening %s in %s: %w", rel, s.name, err)
	}
	defer unix.Close(csfd)
	cdfd, err := openChildDir(dfd, name)
	if err != nil {
		return fmt.Errorf("opening the copy of %s: %w", rel, err)
	}
	defer unix.Close(cdfd)
	return copyDir(ctx, s, csfd, rel, cdfd, keep)
}
