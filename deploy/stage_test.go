package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/ociboot/ociboot/kargs"
	"github.com/ociboot/ociboot/oci"
)

// runningHost is a directory sysroot driven as a booted host: its own run directory and
// a kernel command line file that names the booted deployment.
type runningHost struct {
	t       *testing.T
	s       *Sysroot
	run     string
	cmdline string
	imgs    []*oci.Image // the versions deployed at first, pulled
}

// newRunningHost deploys versions (in that order, at once, on the sysroot not running),
// then opens the sysroot as running, booted from the last one deployed.
func newRunningHost(t *testing.T, versions ...*testutil.Image) (*runningHost, []*Deployment) {
	t.Helper()
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	dir := t.TempDir()
	s0, err := OpenSysroot(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &runningHost{t: t, run: filepath.Join(t.TempDir(), "run"), cmdline: filepath.Join(t.TempDir(), "cmdline")}
	var deps []*Deployment
	for i, img := range versions {
		pulled := pullLayout(t, s0, img, "v"+string(rune('0'+i)))
		d, err := s0.Deploy(ctx, pulled)
		if err != nil {
			t.Fatal(err)
		}
		deps = append(deps, d)
		h.imgs = append(h.imgs, pulled)
	}
	s0.Close()
	h.bootInto(deps[len(deps)-1])
	h.s, err = OpenSysroot(dir, WithRunning(true), WithRunDir(h.run), WithCmdline(h.cmdline))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.s.Close() })
	return h, deps
}

// bootInto writes the command line the boot loader gives d's entry, as a reboot into it.
func (h *runningHost) bootInto(d *Deployment) {
	h.t.Helper()
	line := "BOOT_IMAGE=" + d.Entry.Linux + " " + d.Options.String() + "\n"
	if err := os.WriteFile(h.cmdline, []byte(line), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// committed and staged are the ids of the boot entries, and of the staged set, in order.
func (h *runningHost) committed() []string { return h.ids(ReadBootSet) }
func (h *runningHost) staged() []string    { return h.ids(ReadStagedBootSet) }

func (h *runningHost) ids(read func(*os.Root) ([]BLSEntry, error)) []string {
	h.t.Helper()
	boot, err := os.OpenRoot(filepath.Join(h.s.Path(), bootDir))
	if err != nil {
		h.t.Fatal(err)
	}
	defer boot.Close()
	entries, err := read(boot)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		id, _, err := ParseRootSelector(kargs.Parse([]byte(e.Options)))
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, id.String())
	}
	return out
}

func (h *runningHost) stagedFile() *stagedFile {
	h.t.Helper()
	sf, err := h.s.readStagedFile()
	if err != nil {
		h.t.Fatal(err)
	}
	return sf
}

func (h *runningHost) etcPath(id composefs.Digest, p string) string {
	return filepath.Join(h.s.Path(), stateDir(id), "etc", p)
}

func (h *runningHost) readEtc(id composefs.Digest, p string) string {
	data, err := os.ReadFile(h.etcPath(id, p))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(data)
}

func (h *runningHost) writeEtc(id composefs.Digest, p, data string) {
	h.t.Helper()
	if err := os.WriteFile(h.etcPath(id, p), []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// status is the host's status, checked against bootc's schema.
func (h *runningHost) status() *Host {
	h.t.Helper()
	st, err := h.s.Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	checkEmitted(h.t, hostSchema(h.t), st)
	return st
}

func verity(e *BootEntry) string {
	if e == nil || e.Composefs == nil {
		return "<none>"
	}
	return e.Composefs.Verity
}

func ids(ds ...composefs.Digest) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

// TestStageAndFinalize: on a running host, v2 is staged (entries untouched, the staged
// set, staged.json and reboot-required written, status showing it); an /etc edit made
// after staging survives finalize-staged, which commits [v2, v1]; until the reboot, v1 is
// still booted and v2, booting next, is in the rollback slot with rollbackQueued.
func TestStageAndFinalize(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", `kargs = ["quiet"]`, nil))
	v1 := deps[0]
	h.writeEtc(v1.ID, "hostname", "mine\n")

	img2 := pullLayout(t, h.s, testOS(t, "2", `kargs = ["quiet"]`, func(l *testutil.Layer) {
		l.Dir("etc", 0o755).File("etc/new-in-v2", 0o644, "v2 default\n")
	}), "v2")
	d2, err := h.s.Deploy(ctx, img2)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(v1.ID)) {
		t.Errorf("entries after staging: %v, want only v1", got)
	}
	if got := h.staged(); !slicesEqual(got, ids(d2.ID, v1.ID)) {
		t.Errorf("staged set: %v, want [v2 v1]", got)
	}
	if sf := h.stagedFile(); sf == nil || *sf != (stagedFile{Deployment: d2.ID.String(), Booted: v1.ID.String()}) {
		t.Errorf("staged.json: %+v", sf)
	}
	if data, err := os.ReadFile(filepath.Join(h.run, "reboot-required")); err != nil || string(data) != rebootRequiredText {
		t.Errorf("reboot-required: %q %v", data, err)
	}
	// The staged /etc is the image's, until finalize merges.
	if got := h.readEtc(d2.ID, "hostname"); got != "image\n" {
		t.Errorf("staged /etc/hostname = %q, want the image's", got)
	}
	st := h.status()
	if verity(st.Status.Staged) != d2.ID.String() || verity(st.Status.Booted) != v1.ID.String() ||
		st.Status.Rollback != nil || st.Status.RollbackQueued || st.Status.Staged.DownloadOnly {
		t.Errorf("status after staging: staged %s booted %s rollback %s queued %v", verity(st.Status.Staged),
			verity(st.Status.Booted), verity(st.Status.Rollback), st.Status.RollbackQueued)
	}
	if st.Spec.Image == nil || st.Status.Staged.Image == nil || st.Status.Staged.Image.ImageDigest != img2.ManifestDigest.String() {
		t.Errorf("status spec/staged image: %+v %+v", st.Spec.Image, st.Status.Staged.Image)
	}
	if b, err := h.s.Booted(ctx); err != nil || b.ID != v1.ID {
		t.Errorf("Booted: %v %v", b, err)
	}
	if _, err := h.s.Deploy(ctx, img2); !errors.Is(err, ErrStagedUnchanged) {
		t.Errorf("staging v2 again: %v, want ErrStagedUnchanged", err)
	}
	if _, err := h.s.Deploy(ctx, h.imgs[0]); !errors.Is(err, ErrNoChange) {
		t.Errorf("staging the booted image: %v, want ErrNoChange", err)
	}

	// Edits after staging: they reach v2 at finalize.
	h.writeEtc(v1.ID, "hostname", "later\n")
	h.writeEtc(v1.ID, "late.conf", "late\n")
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(d2.ID, v1.ID)) {
		t.Errorf("entries after finalize: %v, want [v2 v1]", got)
	}
	if got := h.staged(); got != nil {
		t.Errorf("staged set after finalize: %v", got)
	}
	if sf := h.stagedFile(); sf != nil {
		t.Errorf("staged.json after finalize: %+v", sf)
	}
	for p, want := range map[string]string{"hostname": "later\n", "late.conf": "late\n", "default.conf": "v=2\n", "new-in-v2": "v2 default\n"} {
		if got := h.readEtc(d2.ID, p); got != want {
			t.Errorf("after finalize, v2's /etc/%s = %q, want %q", p, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(h.s.Path(), stateDir(d2.ID), mergedEtcTmp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the merge's temporary directory is left: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(h.s.Path(), varDir, "lib/shipped")); err != nil || string(data) != "shipped 2\n" {
		t.Errorf("/var/lib/shipped after finalize: %q %v", data, err)
	}
	// Before the reboot: v1 booted (the command line), v2 boots next. bootc's slots: the
	// booted one out, the first left is the rollback (v2); it sorts before the booted
	// one, so rollbackQueued, and spec.bootOrder says rollback.
	st = h.status()
	if verity(st.Status.Booted) != v1.ID.String() || verity(st.Status.Rollback) != d2.ID.String() ||
		!st.Status.RollbackQueued || st.Spec.BootOrder != BootOrderRollback || st.Status.Staged != nil {
		t.Errorf("status after finalize: booted %s rollback %s queued %v order %s staged %s", verity(st.Status.Booted),
			verity(st.Status.Rollback), st.Status.RollbackQueued, st.Spec.BootOrder, verity(st.Status.Staged))
	}
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Errorf("finalizing with nothing staged: %v", err)
	}
	// The reboot: v2 booted, v1 the rollback, nothing queued.
	deps2, _ := h.s.Deployments(ctx)
	h.bootInto(deps2[0])
	st = h.status()
	if verity(st.Status.Booted) != d2.ID.String() || verity(st.Status.Rollback) != v1.ID.String() || st.Status.RollbackQueued {
		t.Errorf("status after the reboot: booted %s rollback %s queued %v", verity(st.Status.Booted),
			verity(st.Status.Rollback), st.Status.RollbackQueued)
	}
}

// TestStageDownloadOnly: a download-only deployment stays staged through finalize; once
// unlocked (--from-downloaded) it is finalized. A reboot without finalizing forgets a
// staged deployment (staged.json is in /run), and gc removes it.
func TestStageDownloadOnly(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", "", nil))
	v1 := deps[0]
	img2 := pullLayout(t, h.s, testOS(t, "2", "", nil), "v2")
	d2, err := h.s.Deploy(ctx, img2, WithDownloadOnly(true))
	if err != nil {
		t.Fatal(err)
	}
	if st := h.status(); verity(st.Status.Staged) != d2.ID.String() || !st.Status.Staged.DownloadOnly {
		t.Errorf("status: staged %s downloadOnly %v", verity(st.Status.Staged), st.Status.Staged != nil && st.Status.Staged.DownloadOnly)
	}
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(v1.ID)) {
		t.Errorf("download-only finalized: entries %v", got)
	}
	if got := h.staged(); !slicesEqual(got, ids(d2.ID, v1.ID)) || h.stagedFile() == nil {
		t.Errorf("download-only no longer staged: %v %+v", got, h.stagedFile())
	}
	// The reboot without finalizing: /run is empty again.
	if err := os.RemoveAll(h.run); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st.Status.Staged != nil {
		t.Errorf("a staged set left by the last boot shows as staged")
	}
	if _, err := h.s.SetStagedDownloadOnly(ctx, false); !errors.Is(err, ErrNothingStaged) {
		t.Errorf("unlocking after the reboot: %v, want ErrNothingStaged", err)
	}
	if _, err := h.s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := h.staged(); got != nil {
		t.Errorf("gc left the stale staged set: %v", got)
	}
	if _, err := os.Stat(filepath.Join(h.s.Path(), stateDir(d2.ID))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gc left the stale staged deployment's state: %v", err)
	}

	// Staged again, download-only, then unlocked: finalized.
	if _, err := h.s.Deploy(ctx, img2, WithDownloadOnly(true)); err != nil {
		t.Fatal(err)
	}
	if changed, err := h.s.SetStagedDownloadOnly(ctx, false); err != nil || !changed {
		t.Fatalf("unlocking: %v %v", changed, err)
	}
	if st := h.status(); st.Status.Staged == nil || st.Status.Staged.DownloadOnly {
		t.Errorf("unlocked, status still says download-only")
	}
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(d2.ID, v1.ID)) {
		t.Errorf("unlocked and finalized: entries %v", got)
	}
}

// TestStageReplacesStaged: staging v3 over a staged v2 replaces it; the booted v1 stays
// second; a kargs change staged before is carried to what is staged on top of it.
func TestStageReplacesStaged(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", `kargs = ["quiet"]`, nil))
	v1 := deps[0]
	d1k, err := h.s.SetKargs(ctx, func(c *kargs.Cmdline) error { return c.Apply(kargs.Op{Kind: kargs.Append, Arg: "console=ttyS0"}) })
	if err != nil {
		t.Fatal(err)
	}
	if got := h.staged(); !slicesEqual(got, ids(v1.ID, v1.ID)) || d1k.ID != v1.ID {
		t.Errorf("kargs staged: %v", got)
	}
	if got := h.committed(); !slicesEqual(got, ids(v1.ID)) {
		t.Errorf("kargs staging changed the entries: %v", got)
	}
	d2, err := h.s.Deploy(ctx, pullLayout(t, h.s, testOS(t, "2", `kargs = ["quiet"]`, nil), "v2"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d2.Options.String(), "console=ttyS0") {
		t.Errorf("v2 staged over a kargs change: %q lost console=ttyS0", d2.Options)
	}
	d3, err := h.s.Deploy(ctx, pullLayout(t, h.s, testOS(t, "3", `kargs = ["quiet"]`, nil), "v3"))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.staged(); !slicesEqual(got, ids(d3.ID, v1.ID)) {
		t.Errorf("staged set after v3 over v2: %v, want [v3 v1]", got)
	}
	if sf := h.stagedFile(); sf == nil || sf.Deployment != d3.ID.String() {
		t.Errorf("staged.json: %+v", sf)
	}
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(d3.ID, v1.ID)) {
		t.Errorf("entries: %v, want [v3 v1]", got)
	}
}

// TestStageKargs: a kargs change of the booted image is staged and finalized without a
// merge (same state); changed back before finalize, the staged change is dropped.
func TestStageKargs(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", `kargs = ["quiet"]`, nil))
	v1 := deps[0]
	add := func(c *kargs.Cmdline) error { return c.Apply(kargs.Op{Kind: kargs.Append, Arg: "console=ttyS0"}) }
	del := func(c *kargs.Cmdline) error { return c.Apply(kargs.Op{Kind: kargs.Delete, Arg: "console=ttyS0"}) }
	if _, err := h.s.SetKargs(ctx, add); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.SetKargs(ctx, del); err != nil {
		t.Fatal(err)
	}
	if got := h.staged(); got != nil || h.stagedFile() != nil {
		t.Errorf("kargs changed back: still staged %v", got)
	}
	d, err := h.s.SetKargs(ctx, add)
	if err != nil {
		t.Fatal(err)
	}
	h.writeEtc(v1.ID, "hostname", "mine\n")
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := h.s.Deployments(ctx)
	if err != nil || len(all) != 2 || all[0].Options.String() != d.Options.String() || all[1].Options.String() != v1.Options.String() {
		t.Fatalf("after finalize: %v %v", all, err)
	}
	if got := h.readEtc(v1.ID, "hostname"); got != "mine\n" {
		t.Errorf("the shared /etc changed: %q", got)
	}
	// Still booted with the old command line: the booted entry is the second.
	if b, err := h.s.Booted(ctx); err != nil || b.Options.String() != v1.Options.String() {
		t.Errorf("Booted: %v %v", b, err)
	}
	if st := h.status(); !st.Status.RollbackQueued {
		t.Errorf("the new command line boots next, but rollbackQueued is false")
	}
}

// TestRollbackRunning: rollback on a running host discards a staged deployment and
// writes the swapped order at once; a second rollback reverts the first.
func TestRollbackRunning(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "0", "", nil), testOS(t, "1", "", nil))
	v0, v1 := deps[0], deps[1]
	if _, err := h.s.Deploy(ctx, pullLayout(t, h.s, testOS(t, "2", "", nil), "v2")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(h.run, "reboot-required"))
	if err := h.s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.staged(); got != nil || h.stagedFile() != nil {
		t.Errorf("rollback kept the staged deployment: %v %+v", got, h.stagedFile())
	}
	if got := h.committed(); !slicesEqual(got, ids(v0.ID, v1.ID)) {
		t.Errorf("entries after rollback: %v, want [v0 v1]", got)
	}
	if _, err := os.Stat(filepath.Join(h.run, "reboot-required")); err != nil {
		t.Errorf("reboot-required after rollback: %v", err)
	}
	st := h.status()
	if verity(st.Status.Booted) != v1.ID.String() || verity(st.Status.Rollback) != v0.ID.String() || !st.Status.RollbackQueued || st.Status.Staged != nil {
		t.Errorf("status after rollback: booted %s rollback %s queued %v", verity(st.Status.Booted), verity(st.Status.Rollback), st.Status.RollbackQueued)
	}
	if err := h.s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(); !slicesEqual(got, ids(v1.ID, v0.ID)) {
		t.Errorf("entries after a second rollback: %v, want [v1 v0]", got)
	}
	if st := h.status(); st.Status.RollbackQueued || st.Spec.BootOrder != BootOrderDefault {
		t.Errorf("a second rollback: still queued")
	}
}

// TestStageConflicts: a conflict with /etc as it is when staging refuses before
// anything is staged; one made by an edit after staging discards the staged deployment
// at finalize, naming the path, and the entries stay as they were.
func TestStageConflicts(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", "", nil))
	v1 := deps[0]
	img2 := pullLayout(t, h.s, testOS(t, "2", "", func(l *testutil.Layer) {
		l.Dir("etc", 0o755).Dir("etc/app", 0o755).File("etc/app/conf", 0o644, "x\n")
	}), "v2")

	// At stage time: the host has a file where v2 has a directory.
	h.writeEtc(v1.ID, "app", "host file\n")
	_, err := h.s.Deploy(ctx, img2)
	var conflict *MergeConflictError
	if !errors.As(err, &conflict) || !slicesEqual(conflict.Paths, []string{"app"}) {
		t.Fatalf("staging over a conflict: %v", err)
	}
	if h.staged() != nil || h.stagedFile() != nil {
		t.Errorf("a conflict at stage time staged something")
	}
	if _, err := os.Stat(filepath.Join(h.run, "reboot-required")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reboot-required after a refused stage: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.s.Path(), stateDir(img2.ComposefsDigest))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused stage wrote the deployment's state: %v", err)
	}

	// At finalize: the file comes after staging.
	if err := os.Remove(h.etcPath(v1.ID, "app")); err != nil {
		t.Fatal(err)
	}
	d2, err := h.s.Deploy(ctx, img2)
	if err != nil {
		t.Fatal(err)
	}
	h.writeEtc(v1.ID, "app", "host file\n")
	err = h.s.FinalizeStaged(ctx)
	if !errors.As(err, &conflict) || !slicesEqual(conflict.Paths, []string{"app"}) || !strings.Contains(err.Error(), "app") {
		t.Fatalf("finalizing over a conflict: %v", err)
	}
	if got := h.committed(); !slicesEqual(got, ids(v1.ID)) {
		t.Errorf("entries after a conflict at finalize: %v, want [v1]", got)
	}
	if h.staged() != nil || h.stagedFile() != nil {
		t.Errorf("the conflicting deployment is still staged")
	}
	if st := h.status(); st.Status.Staged != nil || verity(st.Status.Booted) != v1.ID.String() {
		t.Errorf("status after a conflict at finalize: staged %s booted %s", verity(st.Status.Staged), verity(st.Status.Booted))
	}
	if _, err := os.Stat(filepath.Join(h.s.Path(), stateDir(d2.ID), mergedEtcTmp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the merge's temporary directory is left: %v", err)
	}
}

// TestBootedNotManaged: a running host whose command line names no deployment is not
// managed: Booted fails with ErrNotBooted, status shows nothing, Deploy refuses.
func TestBootedNotManaged(t *testing.T) {
	ctx := context.Background()
	h, _ := newRunningHost(t, testOS(t, "1", "", nil))
	if err := os.WriteFile(h.cmdline, []byte("root=/dev/sda1 quiet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.Booted(ctx); !errors.Is(err, ErrNotBooted) {
		t.Errorf("Booted: %v, want ErrNotBooted", err)
	}
	if st := h.status(); st.Status.Booted != nil || st.Status.Rollback != nil {
		t.Errorf("status of an unmanaged host: %+v", st.Status)
	}
	if _, err := h.s.Deploy(ctx, pullLayout(t, h.s, testOS(t, "2", "", nil), "v2")); !errors.Is(err, ErrNotBooted) {
		t.Errorf("Deploy: %v, want ErrNotBooted", err)
	}
	data, _ := json.Marshal(h.stagedFile())
	if string(data) != "null" {
		t.Errorf("staged.json: %s", data)
	}
}

// TestBootedFromMountinfo: a running host's booted deployment is the one its / mount
// names (source composefs:<digest>, as SetupRoot mounts it), even where the command line
// names another (a soft reboot); with / not a deployment, the command line decides.
func TestBootedFromMountinfo(t *testing.T) {
	h, deps := newRunningHost(t, testOS(t, "1", "", nil), testOS(t, "2", "", nil))
	v1, v2 := deps[0], deps[1]
	mi := filepath.Join(t.TempDir(), "mountinfo")
	for _, tc := range []struct {
		name, root string
		want       *Deployment
	}{
		{"/ names v1, cmdline v2", "22 1 0:21 / / ro,relatime shared:1 - overlay " + BootedSourcePrefix + v1.ID.String() + " ro,lowerdir+=/x,datadir+=/y\n", v1},
		{"/ is not a deployment", "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n", v2},
		{"an overlay of something else", "22 1 0:21 / / rw - overlay overlay rw,lowerdir=/a\n", v2},
	} {
		data := "21 1 0:20 / /proc rw - proc proc rw\n" + tc.root + "30 22 0:30 / /run rw - tmpfs tmpfs rw\n"
		if err := os.WriteFile(mi, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSysroot(h.s.Path(), WithRunning(true), WithRunDir(h.run), WithCmdline(h.cmdline), WithMountinfo(mi))
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Booted(context.Background())
		s.Close()
		if err != nil {
			t.Fatalf("%s: Booted: %v", tc.name, err)
		}
		if b.ID != tc.want.ID {
			t.Errorf("%s: booted %s, want %s", tc.name, b.ID, tc.want.ID)
		}
	}
}

// TestFinalizeKeepsBlessing: a boot marked good after an upgrade was staged stays good
// once finalize commits the staged set, which was copied while the booted entry was
// still on trial; the staged deployment's own entry stays on trial.
func TestFinalizeKeepsBlessing(t *testing.T) {
	ctx := context.Background()
	h, deps := newRunningHost(t, testOS(t, "1", "", nil))
	boot, err := os.OpenRoot(filepath.Join(h.s.Path(), bootDir))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	entries, err := ReadBootSet(boot)
	if err != nil || len(entries) != 1 {
		t.Fatalf("entries: %v %v", entries, err)
	}
	// systemd-boot takes a try before starting the kernel.
	e := entries[0]
	from := e.FileName()
	e.TriesLeft, e.TriesDone = 2, 1
	dir := filepath.Join(h.s.Path(), bootDir, bootLoaderDir, bootEntriesName)
	if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, e.FileName())); err != nil {
		t.Fatal(err)
	}
	d2, err := h.s.Deploy(ctx, pullLayout(t, h.s, testOS(t, "2", "", nil), "v2"))
	if err != nil {
		t.Fatal(err)
	}
	staged, err := ReadStagedBootSet(boot)
	if err != nil || len(staged) != 2 || staged[1].TriesLeft != 2 || staged[1].TriesDone != 1 {
		t.Fatalf("staged set %v (%v): want v1's entry copied at +2-1", staged, err)
	}
	c, err := ParseBootCountPath("/" + bootLoaderDir + "/" + bootEntriesName + "/" + e.FileName())
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := MarkBoot(boot, c, BootGood); err != nil || !changed {
		t.Fatalf("marking the boot good: %v %v", changed, err)
	}
	if err := h.s.FinalizeStaged(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBootSet(boot)
	if err != nil || len(got) != 2 {
		t.Fatalf("entries after finalize: %v %v", got, err)
	}
	if id, _, _ := ParseRootSelector(kargs.Parse([]byte(got[0].Options))); id != d2.ID || got[0].TriesLeft != 3 {
		t.Errorf("first entry %s: want v2's, on trial with 3 tries", got[0].FileName())
	}
	if id, _, _ := ParseRootSelector(kargs.Parse([]byte(got[1].Options))); id != deps[0].ID || got[1].Counting() {
		t.Errorf("second entry %s: want v1's, good (no counter), as bless-boot left it", got[1].FileName())
	}
}
