package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// propIterations is how many random merges TestMergeEtcProperties runs (a tenth in -short).
const propIterations = 1000

// pnode is one entry of a random tree.
type pnode struct {
	kind          byte // 'd' directory, 'f' file, 'l' symlink, 'p' FIFO
	mode          uint32
	content       string // a file's bytes, a symlink's target
	xattr         string // user.k, "" for none
	uid, gid      int
	label         string // security.selinux, "" for none (root only)
	isRoot, fifos bool
}

type ptree map[string]*pnode

var (
	propNames    = []string{"a", "b", "c", "d"}
	propContents = []string{"", "x", "y", "xyz", strings.Repeat("long ", 20000)}
	propTargets  = []string{"a", "../b", "/etc/passwd", "no-such", "c/d", "../../outside", "$OUT", "/", ".."}
	propFileMode = []uint32{0o644, 0o600, 0o755, 0o640}
	propDirMode  = []uint32{0o755, 0o700, 0o775, 0o750}
	propLabels   = []string{"", "system_u:object_r:etc_t:s0", "system_u:object_r:unlabeled_t:s0"}
)

func pick[T any](r *rand.Rand, l []T) T { return l[r.IntN(len(l))] }

func randNode(r *rand.Rand, dirOK, root bool) *pnode {
	n := &pnode{isRoot: root}
	switch k := r.IntN(10); {
	case k < 3 && dirOK:
		n.kind, n.mode = 'd', pick(r, propDirMode)
	case k < 9:
		n.kind, n.mode, n.content = 'f', pick(r, propFileMode), pick(r, propContents)
	default:
		n.kind, n.content = 'l', pick(r, propTargets)
	}
	if n.kind != 'l' && r.IntN(4) == 0 {
		n.xattr = pick(r, []string{"1", "2"})
	}
	if root {
		n.uid, n.gid = pick(r, []int{0, 1000}), pick(r, []int{0, 4})
		n.label = pick(r, propLabels)
	}
	return n
}

// genTree makes a random tree of at most three levels over four names, so that the
// trees of one case often share paths.
func genTree(r *rand.Rand, root bool) ptree {
	t := ptree{}
	var fill func(dir string, depth int)
	fill = func(dir string, depth int) {
		for _, name := range propNames {
			if r.IntN(100) < 50 {
				p := joinPath(dir, name)
				t[p] = randNode(r, depth < 2, root)
				if t[p].kind == 'd' {
					fill(p, depth+1)
				}
			}
		}
	}
	fill("", 0)
	return t
}

func (t ptree) drop(p string) {
	for q := range t {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(t, q)
		}
	}
}

// mutate returns a copy of t with random deletions, changes of content, mode, type,
// xattrs (and owner and label as root) and additions, FIFOs among them.
func mutate(r *rand.Rand, t ptree, root bool) ptree {
	out := ptree{}
	for p, n := range t {
		c := *n
		out[p] = &c
	}
	for _, p := range slices.Sorted(maps.Keys(t)) {
		n, ok := out[p]
		if !ok {
			continue
		}
		switch k := r.IntN(100); {
		case k < 8:
			out.drop(p)
		case k < 16 && n.kind != 'd':
			if n.kind == 'l' {
				n.content = pick(r, propTargets)
			} else {
				n.content = pick(r, propContents)
			}
		case k < 21 && n.kind != 'l':
			if n.kind == 'd' {
				n.mode = pick(r, propDirMode)
			} else {
				n.mode = pick(r, propFileMode)
			}
		case k < 25:
			out.drop(p)
			out[p] = randNode(r, !strings.Contains(p, "/"), root)
		case k < 29 && n.kind != 'l':
			n.xattr = pick(r, []string{"", "1", "2", "3"})
		case k < 33 && root:
			n.uid, n.gid = pick(r, []int{0, 1000, 7}), pick(r, []int{0, 4})
		case k < 37 && root:
			n.label = pick(r, propLabels)
		}
	}
	for range r.IntN(5) {
		dirs := []string{""}
		for p, n := range out {
			if n.kind == 'd' {
				dirs = append(dirs, p)
			}
		}
		slices.Sort(dirs)
		dir := pick(r, dirs)
		p := joinPath(dir, pick(r, append(propNames, "e")))
		if _, ok := out[p]; ok || strings.Count(p, "/") > 3 {
			continue
		}
		if r.IntN(12) == 0 {
			out[p] = &pnode{kind: 'p', mode: 0o644}
			continue
		}
		out[p] = randNode(r, strings.Count(p, "/") < 3, root)
		if out[p].kind == 'd' && r.IntN(2) == 0 {
			out[joinPath(p, "f")] = randNode(r, false, root)
		}
	}
	return out
}

// lines renders t for testutil.BuildTree, parents first.
func (t ptree) lines() []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(t)) {
		n := t[p]
		switch n.kind {
		case 'd':
			out = append(out, fmt.Sprintf("dir %s %04o", p, n.mode))
		case 'f':
			out = append(out, fmt.Sprintf("file %s %04o %s", p, n.mode, n.content))
		case 'l':
			out = append(out, fmt.Sprintf("symlink %s %s", p, n.content))
		case 'p':
			out = append(out, fmt.Sprintf("fifo %s %04o", p, n.mode))
		}
		if n.xattr != "" {
			out = append(out, fmt.Sprintf("xattr %s user.k %s", p, n.xattr))
		}
		if n.isRoot && n.kind != 'p' {
			out = append(out, fmt.Sprintf("owner %s %d %d", p, n.uid, n.gid))
			if n.label != "" {
				out = append(out, fmt.Sprintf("xattr %s security.selinux %s", p, n.label))
			}
			if n.kind == 'f' {
				out = append(out, fmt.Sprintf("file %s %04o %s", p, n.mode, n.content)) // chown cleared set-id bits
			}
		}
	}
	return out
}

// TestMergeEtcProperties merges random pristine, current and new trees and checks, for
// each: every path the host changed equals the host's; every path it did not touch
// equals the new image's (or is gone with it, or is made again holding local changes);
// every path it deleted is absent; and a conflict is reported exactly when the rules,
// computed independently, find one, with exactly the paths they find, and nothing
// written.
func TestMergeEtcProperties(t *testing.T) {
	iterations := propIterations
	if testing.Short() {
		iterations /= 10
	}
	root := os.Geteuid() == 0 // owners and labels too
	var merged, conflicted int
	for i := range iterations {
		seed := uint64(0x5eed) + uint64(i)
		r := rand.New(rand.NewPCG(seed, seed))
		p := genTree(r, root)
		c, n := mutate(r, p, root), mutate(r, p, root)
		ok := t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			s := newSandbox(t, "pristine", "current", "new", "target")
			s.build(t, "pristine", p.lines())
			s.build(t, "current", c.lines())
			s.build(t, "new", n.lines())
			pm, cm, nm := readModel(t, s.dirs["pristine"]), readModel(t, s.dirs["current"]), readModel(t, s.dirs["new"])
			e := expectMerge(pm, cm, nm)
			pr, cr, nr, dst := s.root(t, "pristine"), s.root(t, "current"), s.root(t, "new"), s.root(t, "target")
			s.watch(t)
			_, err := MergeEtc(context.Background(), pr, cr, nr, dst)
			s.verify(t)
			var ce *MergeConflictError
			switch {
			case len(e.conflicts) > 0:
				conflicted++
				if !errors.As(err, &ce) {
					t.Fatalf("the rules find conflicts %q; MergeEtc: %v", e.conflicts, err)
				}
				if !slices.Equal(ce.Paths, e.conflicts) {
					t.Errorf("conflicts reported %q, the rules find %q", ce.Paths, e.conflicts)
				}
				if got := describeFull(t, s.dirs["target"]); len(got) != 0 {
					t.Errorf("a conflicting merge wrote %v", got)
				}
			case err != nil:
				t.Fatalf("MergeEtc: %v (the rules find no conflict)", err)
			default:
				merged++
				checkInvariants(t, e, pm, cm, nm, readModel(t, s.dirs["target"]))
			}
		})
		if !ok {
			t.Fatalf("seed %d failed; the trees:\npristine %q\ncurrent  %q\nnew      %q", seed, p.lines(), c.lines(), n.lines())
		}
	}
	t.Logf("%d random merges: %d merged, %d refused with conflicts", iterations, merged, conflicted)
	if merged == 0 || conflicted == 0 {
		t.Errorf("the generator must produce both merges and conflicts")
	}
}
