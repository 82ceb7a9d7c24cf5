package deploy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/kargs"
)

func TestEditKargs(t *testing.T) {
	c := kargs.Parse([]byte("quiet loglevel=3 rw composefs=abc"))
	o := deployOptions{addKargs: []string{"console=ttyS0", "root=PARTLABEL=root"}, delKargs: []string{"quiet", "loglevel=4", "absent"}}
	if err := o.editKargs(c); err != nil {
		t.Fatal(err)
	}
	if got, want := c.String(), "loglevel=3 rw composefs=abc console=ttyS0 root=PARTLABEL=root"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []deployOptions{{addKargs: []string{"composefs=def"}}, {delKargs: []string{"composefs"}}} {
		if err := bad.editKargs(kargs.Parse([]byte("composefs=abc"))); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestCheckInstallRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckInstallRoot(root); err != nil {
		t.Errorf("only lost+found: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckInstallRoot(root); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("not empty: %v", err)
	}
	if err := CheckInstallRoot(filepath.Join(root, "missing")); err == nil {
		t.Error("a missing root passed")
	}
}

func TestMakeDiskRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(file, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o    DiskOptions
		dev  string
		want string
	}{
		{DiskOptions{Filesystem: "zfs"}, file, "unknown filesystem"},
		{DiskOptions{Loopback: true}, file, "--wipe"},
		{DiskOptions{Loopback: true}, dir, "not a regular file"},
		{DiskOptions{}, file, "--via-loopback"},
	} {
		err := MakeDisk(context.Background(), filepath.Join(dir, "staging"), c.dev, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v on %s: %v, want %q", c.o, c.dev, err, c.want)
		}
	}
	// A filesystem whose mkfs is not installed is refused before anything is made.
	t.Setenv("PATH", t.TempDir())
	for fs, want := range map[string]string{
		"ext4": "needs mkfs.ext4 (Debian package e2fsprogs)", "btrfs": "needs mkfs.btrfs (Debian package btrfs-progs)",
		"xfs": "needs mkfs.xfs (Debian package xfsprogs)",
	} {
		disk := filepath.Join(dir, "new-"+fs+".img")
		err := MakeDisk(context.Background(), filepath.Join(dir, "staging"), disk, DiskOptions{Filesystem: fs, Loopback: true})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s without its mkfs: %v, want %q", fs, err, want)
		}
		if _, err := os.Stat(disk); err == nil {
			t.Errorf("%s without its mkfs: %s was made", fs, disk)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "512M": 512 << 20, "2G": 2 << 30, "2GiB": 2 << 30, "1k": 1024, "3MB": 3 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1M", "1X", "1.5G", "99999999999T"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) passed", bad)
		}
	}
}
