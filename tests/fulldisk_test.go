package tests

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestFullDisk: on a sysroot whose filesystem cannot hold the next image, upgrade fails
// with one line that says so and what to do, the current deployment stays complete and
// default, and gc reclaims what the failed pull wrote.
func TestFullDisk(t *testing.T) {
	testutil.RequireRoot(t, "loop-mounts a small filesystem")
	mkfs := testutil.RequireTool(t, "mkfs.ext4", "e2fsprogs")
	work := t.TempDir()
	img := filepath.Join(work, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 40<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-b", "4096", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	sys := filepath.Join(work, "sysroot")
	os.MkdirAll(sys, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", img, sys).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", sys).Run() })

	layout := filepath.Join(work, "layout")
	crashOS(t, "1").WriteLayout(t, layout, "os")
	ociboot(t, "--sysroot", sys, "switch", "--transport", "oci", layout+":os")
	before := bootOrder(t, sys)
	free := func() uint64 {
		var st unix.Statfs_t
		if err := unix.Statfs(sys, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail * uint64(st.Bsize)
	}
	freeBefore := free()

	// v2 brings 48 MiB of incompressible files: more than the 40 MiB disk.
	big := testutil.NewLayer().Dir("usr", 0o755).Dir("usr/share", 0o755).Dir("usr/share/big", 0o755)
	r := rand.NewChaCha8([32]byte{7})
	for i := range 12 {
		data := make([]byte, 4<<20)
		r.Read(data)
		big.File("usr/share/big/"+string(rune('a'+i)), 0o644, string(data))
	}
	crashOS(t, "2", big).WriteLayout(t, layout, "os")
	cmd := exec.Command(ocibootBin, "--sysroot", sys, "upgrade")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("upgrade onto a full disk succeeded:\n%s", out)
	}
	msg := strings.TrimSpace(string(out))
	t.Logf("upgrade onto a full disk: %s", msg)
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, "ociboot gc") {
		t.Errorf("upgrade onto a full disk said %q; want one line naming the full disk and what to do", msg)
	}
	if got := bootOrder(t, sys); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Errorf("after the failed upgrade the entries are %v, want %v", got, before)
	}
	ociboot(t, "--sysroot", sys, "fsck")
	if free() >= freeBefore {
		t.Fatalf("the failed pull wrote nothing (free %d, was %d): the test proves nothing", free(), freeBefore)
	}
	ociboot(t, "--sysroot", sys, "gc")
	if f := free(); f+(256<<10) < freeBefore {
		t.Errorf("after gc %d bytes free, before the pull %d: gc left the failed pull's data", f, freeBefore)
	}
	ociboot(t, "--sysroot", sys, "fsck")
	if got := bootOrder(t, sys); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Errorf("after gc the entries are %v, want %v", got, before)
	}
}
