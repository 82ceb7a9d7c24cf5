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
// that is not running, the first is also the one that counts as booted.
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
