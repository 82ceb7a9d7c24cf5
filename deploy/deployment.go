package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/kargs"
	"github.com/ociboot/ociboot/oci"
)

// Deployment is one bootable deployment: a boot entry, the composefs image its
// command line names, and its state (etc/ and origin) under state/deploy/<id>.
type Deployment struct {
	ID                   composefs.Digest // the composefs image's fs-verity digest
	MissingVerityAllowed bool             // composefs=?<id>: booted without fs-verity
	Entry                BLSEntry
	Options              *kargs.Cmdline
	Origin               *Origin // nil if the state has no origin (not made by ociboot)
}

// rootKey is the kernel argument naming the deployment to boot.
const rootKey = "composefs"

// RootSelector is the composefs= argument for image d; optional verity (composefs=?d)
// when objects cannot carry fs-verity on this filesystem.
func RootSelector(d composefs.Digest, verityOptional bool) kargs.Param {
	v := d.String()
	if verityOptional {
		v = "?" + v
	}
	p, err := kargs.NewParam([]byte(rootKey), []byte(v))
	if err != nil {
		panic(err) // a hex digest is always a valid value
	}
	return p
}

// ParseRootSelector finds the composefs= argument of a command line.
func ParseRootSelector(c *kargs.Cmdline) (d composefs.Digest, verityOptional bool, err error) {
	ps := c.Get([]byte(rootKey))
	if len(ps) != 1 {
		return d, false, fmt.Errorf("the command line has %d composefs= arguments, want exactly 1", len(ps))
	}
	v, _ := ps[0].Value()
	s := string(v)
	if rest, ok := strings.CutPrefix(s, "?"); ok {
		s, verityOptional = rest, true
	}
	d, err = composefs.ParseDigest(s)
	return d, verityOptional, err
}

// stateDir is a deployment's state directory, relative to the sysroot.
func stateDir(d composefs.Digest) string { return filepath.Join(deployDir, d.String()) }

// Deployments returns the deployments in boot order: the first boots next. On a sysroot
// that is not running, the first is also the one that counts as booted; on a running
// host the booted one is the one the kernel command line names (Booted), which is not
// the first after a rollback or once a staged deployment is finalized.
func (s *Sysroot) Deployments(ctx context.Context) ([]*Deployment, error) {
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	entries, err := ReadBootSet(boot)
	if err != nil {
		return nil, err
	}
	var out []*Deployment
	for _, e := range entries {
		d, err := s.deploymentOf(e)
		if err != nil {
			return nil, fmt.Errorf("boot entry %s: %w", e.FileName(), err)
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *Sysroot) deploymentOf(e BLSEntry) (*Deployment, error) {
	opts := kargs.Parse([]byte(e.Options))
	id, optional, err := ParseRootSelector(opts)
	if err != nil {
		return nil, err
	}
	d := &Deployment{ID: id, MissingVerityAllowed: optional, Entry: e, Options: opts}
	data, err := os.ReadFile(s.join(filepath.Join(stateDir(id), "origin")))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if d.Origin, err = ParseOrigin(data); err != nil {
			return nil, fmt.Errorf("origin of %s: %w", id, err)
		}
	}
	return d, nil
}

// image returns the repository's record of the deployment's image, or nil when the image
// was removed from the repository (the deployment still boots: its composefs image and
// objects are kept by gc while an entry names them).
func (s *Sysroot) image(d *Deployment) *oci.Image {
	if d.Origin == nil || d.Origin.ManifestDigest == "" {
		return nil
	}
	img, err := s.repo.Lookup(d.Origin.ManifestDigest)
	if err != nil {
		return nil
	}
	return img
}

// ErrNotBooted means a running host's kernel command line names no deployment of the
// sysroot: the host was not booted by ociboot (bootc: "not deployed via bootc").
var ErrNotBooted = errors.New("the running host was not booted from a deployment of this sysroot")

// Booted returns the deployment that is booted: on a running host the one whose
// composefs= digest the kernel command line (WithCmdline) names, wherever it is in the
// boot order; on a sysroot that is not running the first one. With nothing deployed on
// a sysroot that is not running it returns nil and no error; a running host that was
// not booted from one of the sysroot's deployments is ErrNotBooted.
func (s *Sysroot) Booted(ctx context.Context) (*Deployment, error) {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	i, err := s.bootedIndex(deps)
	if err != nil || i < 0 {
		return nil, err
	}
	return deps[i], nil
}

// bootedIndex is the index of the booted deployment in deps (boot order); -1 with
// nothing deployed on a sysroot that is not running.
func (s *Sysroot) bootedIndex(deps []*Deployment) (int, error) {
	if !s.running {
		if len(deps) == 0 {
			return -1, nil
		}
		return 0, nil
	}
	id, cmdline, err := s.bootedID()
	if err != nil {
		return -1, err
	}
	// Several entries may name one image (a kargs change makes one): the one whose
	// arguments are all on the command line, the most of them, is the one booted. The
	// boot loader adds its own (BOOT_IMAGE=, initrd=), so the match is not equality.
	found, best := -1, -1
	for i, d := range deps {
		if d.ID != id {
			continue
		}
		if found < 0 {
			found = i
		}
		if n := d.Options.Len(); n > best && argsOn(d.Options, cmdline) {
			found, best = i, n
		}
	}
	if found < 0 {
		return -1, fmt.Errorf("%w: the booted deployment %s (from / and %s) has no boot entry", ErrNotBooted, id, s.cmdlinePath)
	}
	return found, nil
}

// bootedID finds the running host's booted deployment: from the / mount first (its
// source "composefs:<digest>", as SetupRoot mounts it), which stays true where the
// command line does not (a soft reboot into another deployment), then from the command
// line's composefs= argument. The command line is returned too, to tell apart entries
// of one image.
func (s *Sysroot) bootedID() (composefs.Digest, *kargs.Cmdline, error) {
	var id composefs.Digest
	data, err := os.ReadFile(s.cmdlinePath)
	if err != nil {
		return id, nil, fmt.Errorf("reading the kernel command line: %w", err)
	}
	c := kargs.Parse(data)
	if mi, err := os.ReadFile(s.mountinfoPath); err == nil {
		if id, ok := BootedFromMounts(string(mi)); ok {
			return id, c, nil
		}
	}
	id, _, err = ParseRootSelector(c)
	if err != nil {
		return id, nil, fmt.Errorf("%w: %s: %v", ErrNotBooted, s.cmdlinePath, err)
	}
	return id, c, nil
}

// argsOn reports whether every argument of opts is on the command line c.
func argsOn(opts, c *kargs.Cmdline) bool {
	for _, p := range opts.Params() {
		if !c.Contains(p) {
			return false
		}
	}
	return true
}
