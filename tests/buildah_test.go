package tests

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// TestBuildahImage is the specification of pulling what people build: a Containerfile
// built by buildah (FROM a base image in the test's registry, RUN, COPY) and pulled by
// ociboot both ways it can reach it, from the registry after `buildah push` and straight
// from buildah's containers-storage, each mounted with `ociboot image mount` and equal to
// the tree buildah itself shows for the image (`buildah from` + `buildah mount`).
func TestBuildahImage(t *testing.T) {
	testutil.RequireRoot(t, "buildah builds in root storage; mounts the pulled images")
	buildah := testutil.RequireTool(t, "buildah", "buildah")
	addr, _ := startRegistry(t)
	base := busyboxImage(t)
	base.Push(t, addr, "base", "1")

	// A storage of the test's own, so that tests and the host's images do not mix; the
	// containers-storage reference below names it, so ociboot reads the same one.
	st := newBuildahStorage(t, buildah)
	policy := writePolicy(t)
	ctx := t.TempDir()
	files := map[string]string{
		"Containerfile": "FROM " + addr + "/base:1\n" +
			"RUN mkdir -p /opt/app && echo hi > /opt/app/hello && rm -rf /etc/removed-by-run && ln -s hello /opt/app/link\n" +
			"COPY file.txt /opt/app/file.txt\n" +
			"RUN chmod 0600 /etc/kept-by-run\n", // a change of metadata only: the layer copies the file up
		"file.txt": "copied by COPY\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ctx, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const tag = "localhost/osimg:test"
	// --isolation chroot needs no OCI runtime, and shares the host's network (buildah
	// refuses --network none with it; RUN here needs no network). --layers: a layer
	// per instruction, so the image has four, with a whiteout and a copy-up.
	st.run(t, "bud", "--isolation", "chroot", "--tls-verify=false", "--signature-policy", policy,
		"--layers", "-t", tag, ctx)

	// The tree buildah shows for the image: a working container's mount, before anything
	// runs in it.
	ctr := strings.TrimSpace(st.run(t, "from", "--pull=never", "--signature-policy", policy, tag))
	built := strings.TrimSpace(st.run(t, "mount", ctr))
	checkSpotsAt(t, built, buildahSpots, false)

	// What buildah pushes, ociboot pulls from the registry.
	st.run(t, "push", "--tls-verify=false", "--signature-policy", policy, tag, "docker://"+addr+"/osimg:test")
	if m := registryManifest(t, addr, "osimg", "test"); len(m.Layers) != 4 {
		t.Fatalf("buildah pushed %d layers, want 4 (the base, and one per instruction): %+v", len(m.Layers), m)
	}
	sysroot := t.TempDir()
	fromRegistry := pullImage(t, sysroot, "--tls-verify=false", addr+"/osimg:test")
	// And what buildah stored, ociboot pulls from its storage.
	storageRef := "[overlay@" + st.root + "+" + st.runroot + "]" + tag
	fromStorage := pullImage(t, sysroot, "--transport", "containers-storage", storageRef)

	for _, tc := range []struct{ name, image string }{
		{"registry", addr + "/osimg:test"},           // mounted by the name it was pulled as
		{"containers-storage", fromStorage.Manifest}, // by its manifest digest
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "mnt")
			mountImage(t, sysroot, tc.image, mnt)
			compareWithRules(t, built, mnt, buildahRules)
			checkSpotsAt(t, mnt, buildahSpots, true)
		})
	}
	// buildah push compresses the layers anew: the registry's manifest is not the
	// storage's, but the files are the same, and so is the composefs image.
	if fromRegistry.Composefs != fromStorage.Composefs {
		t.Errorf("the image pulled from the registry is composefs %s, from containers-storage %s",
			fromRegistry.Composefs, fromStorage.Composefs)
	}
}

// buildahRules are the differences between a working container's mount and ociboot's
// mount of the same image that are not bugs.
var buildahRules = []expectedDiff{
	{
		// The root of the working container is the root of its overlay's upper layer,
		// which containers-storage makes when it creates the container: 0555, mtime of
		// creation; no layer of the image has a "./" entry to say otherwise. ociboot's
		// root is 0755, as umoci's (TestPullMatchesUmoci).
		why:   "the working container's root directory is containers-storage's",
		match: func(d string) bool { return strings.HasPrefix(d, ".: mtime ") || d == ".: mode 0555, mounted 0755" },
	},
}

// buildahSpots pin what the built image must hold, so that a build that did nothing
// cannot pass: the base's files, what RUN made and removed, what COPY copied.
var buildahSpots = []spot{
	{path: "bin/busybox", want: "type=reg perm=0755"},
	{path: "bin/sh", want: "type=lnk"},
	{path: "etc/passwd", want: "type=reg perm=0644"},
	{path: "opt/app", want: "type=dir"},
	{path: "opt/app/hello", want: "type=reg size=3"},
	{path: "opt/app/link", want: "type=lnk size=5"},
	{path: "opt/app/file.txt", want: "type=reg size=15"},
	{path: "etc/kept-by-run", want: "type=reg perm=0600 uid=1000 gid=1000 size=5"},
	{path: "etc/removed-by-run", want: "absent"},
	// RUN leaves the files and directories buildah binds and mounts over during the
	// step in the layer it commits: empty files of mode 0755, and empty directories.
	{path: "etc/hosts", want: "type=reg perm=0755 size=0"},
	{path: "etc/resolv.conf", want: "type=reg perm=0755 size=0"},
	{path: "proc", want: "type=dir"},
}

// busyboxImage is the base image of the build: Debian's static busybox and links to it
// for the commands the Containerfile's RUN uses, an /etc with root in it, and
// /etc/removed-by-run for RUN to remove.
func busyboxImage(t testing.TB) *testutil.Image {
	t.Helper()
	bb := testutil.RequireTool(t, "busybox", "busybox-static")
	// RUN executes it inside the image, which has no shared libraries.
	if f, err := elf.Open(bb); err != nil {
		t.Fatalf("reading %s: %v", bb, err)
	} else if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		f.Close()
		t.Fatalf("%s is dynamically linked: apt-get install busybox-static (it replaces busybox)", bb)
	} else {
		f.Close()
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	l := testutil.NewLayer().
		Dir("bin", 0o755).File("bin/busybox", 0o755, string(bin))
	for _, cmd := range []string{"sh", "ls", "rm", "mkdir", "echo", "cat", "ln", "cp", "mv", "chmod", "true"} {
		l.Symlink("bin/"+cmd, "busybox")
	}
	l.Dir("etc", 0o755).
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n").
		File("etc/group", 0o644, "root:x:0:\n").
		File("etc/kept-by-run", 0o640, "kept\n", testutil.WithOwner(1000, 1000)).
		Dir("etc/removed-by-run", 0o755).File("etc/removed-by-run/file", 0o644, "removed\n").
		Dir("root", 0o700).
		Dir("tmp", 0o1777)
	return testutil.BuildImage(t, testutil.ImageConfig{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}}, []*testutil.Layer{l})
}

// buildahStorage is a containers-storage of the test's own (overlay driver), which every
// buildah command of the test uses; it is emptied and removed when the test ends.
type buildahStorage struct {
	buildah, root, runroot string
}

func newBuildahStorage(t testing.TB, buildah string) *buildahStorage {
	t.Helper()
	dir := t.TempDir()
	st := &buildahStorage{buildah, filepath.Join(dir, "root"), filepath.Join(dir, "runroot")}
	t.Cleanup(func() {
		// Containers' mounts first (t.Context is gone by now), then the storage's own
		// (the overlay driver keeps its home mounted private); never delete through a
		// mount.
		for _, args := range [][]string{{"umount", "--all"}, {"rm", "--all"}, {"rmi", "--all", "--force"}} {
			cmd := exec.Command(buildah, append(st.globalArgs(), args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if err := errors.Join(unmountUnder(t, st.root), unmountUnder(t, st.runroot)); err != nil {
			t.Errorf("leaving the buildah storage %s in place: %v", dir, err)
		}
	})
	return st
}

func (st *buildahStorage) globalArgs() []string {
	return []string{"--root", st.root, "--runroot", st.runroot, "--storage-driver", "overlay"}
}

// run runs buildah on the test's storage.
func (st *buildahStorage) run(t testing.TB, args ...string) string {
	t.Helper()
	return runTool(t, st.buildah, append(st.globalArgs(), args...)...)
}
