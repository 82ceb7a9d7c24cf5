package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/atomicfile"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/ociboot/ociboot/kargs"
	"github.com/ociboot/ociboot/oci"
)

// ErrNoChange is returned when a deployment would change nothing: the image is the one
// already booted.
var ErrNoChange = errors.New("no change")

// ErrNoRollback is returned by Rollback when there is no other deployment to go back to.
var ErrNoRollback = errors.New("no rollback deployment")

// Deploy makes a deployment of img and makes it the default, keeping the booted
// deployment as the rollback and the pinned ones after it. The host's /etc and /var
// come along through the three-way merges, and the kernel command line follows the
// images' kargs.d (kargs.UpgradeCmdline).
//
// Only sysroots that are not running are supported for now: the change takes effect at
// once, and the default entry's deployment counts as booted. Staging for a running
// host comes with finalize-staged.
func (s *Sysroot) Deploy(ctx context.Context, img *oci.Image) (*Deployment, error) {
	if s.running {
		return nil, errors.New("deploying on a running host (staging) is not supported yet: use --sysroot with a root that is not running")
	}
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	var booted *Deployment
	if len(deps) > 0 {
		booted = deps[0]
		if booted.ID == img.ComposefsDigest {
			return nil, fmt.Errorf("%w: %s is already the default deployment", ErrNoChange, img.Ref)
		}
	}
	nv, err := s.openImage(ctx, img.ComposefsDigest)
	if err != nil {
		return nil, err
	}
	defer nv.Close()
	var pv *imageView
	if booted != nil {
		if pv, err = s.openImage(ctx, booted.ID); err != nil {
			return nil, fmt.Errorf("opening the booted deployment's image: %w", err)
		}
		defer pv.Close()
	}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()

	bf, err := nv.bootFiles()
	if err != nil {
		return nil, err
	}
	bootDir, err := installImageBootFiles(boot, nv, bf)
	if err != nil {
		return nil, err
	}
	failpoint.Step("deploy: boot files installed")
	options, err := s.commandLine(img.ComposefsDigest, nv, pv, booted)
	if err != nil {
		return nil, err
	}
	origin := &Origin{Transport: img.Transport, Image: img.Ref, ManifestDigest: img.ManifestDigest.String(),
		BootDigest: filepath.Base(bootDir), Deployed: time.Now().UTC()}
	if err := s.writeState(ctx, img.ComposefsDigest, nv, pv, booted, origin); err != nil {
		return nil, err
	}
	failpoint.Step("deploy: state renamed into place")
	if err := s.Sync(); err != nil {
		return nil, err
	}
	failpoint.Step("deploy: synced")
	linux, initrd := BootFilePaths(bootDir)
	osr := nv.osRelease()
	nd := DeploymentBoot{Digest: img.ComposefsDigest.String(), Title: osr["PRETTY_NAME"], Version: imageVersion(img, osr),
		Linux: linux, Initrd: []string{initrd}, Options: options.String()}
	order := []DeploymentBoot{nd}
	if booted != nil {
		order = append(order, bootOf(booted))
	}
	for _, d := range deps[min(1, len(deps)):] {
		if d.Origin != nil && d.Origin.Pinned && d.ID != img.ComposefsDigest {
			order = append(order, bootOf(d))
		}
	}
	entries, err := OrderEntries(osr["ID"], order)
	if err != nil {
		return nil, err
	}
	if err := WriteBootSet(boot, entries); err != nil {
		return nil, err
	}
	return s.deploymentOf(entries[0])
}

// Rollback makes the rollback deployment (the second entry) the default, and the
// default the rollback: a second Rollback undoes the first.
func (s *Sysroot) Rollback(ctx context.Context) error {
	if s.running {
		return errors.New("rolling back a running host (staging) is not supported yet: use --sysroot with a root that is not running")
	}
	deps, err := s.Deployments(ctx)
	if err != nil {
		return err
	}
	if len(deps) < 2 {
		return fmt.Errorf("%w: only %d deployment", ErrNoRollback, len(deps))
	}
	order := []DeploymentBoot{bootOf(deps[1]), bootOf(deps[0])}
	for _, d := range deps[2:] {
		order = append(order, bootOf(d))
	}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return err
	}
	defer boot.Close()
	entries, err := OrderEntries(osIDOf(deps[0].Entry), order)
	if err != nil {
		return err
	}
	return WriteBootSet(boot, entries)
}

// bootOf is what an existing deployment's entry says, to write it again in a new order.
func bootOf(d *Deployment) DeploymentBoot {
	return DeploymentBoot{Digest: d.ID.String(), Title: d.Entry.Title, Version: d.Entry.Version,
		Linux: d.Entry.Linux, Initrd: slices.Clone(d.Entry.Initrd), Options: d.Entry.Options,
		Architecture: d.Entry.Architecture, Counter: d.Entry.Counter()}
}

// osIDOf recovers the os-release ID an entry was written for, from its sort key
// ("ociboot-<id>-<n>"); "" when it has none.
func osIDOf(e BLSEntry) string {
	k := e.SortKey
	const p = "ociboot-"
	if len(k) < len(p) || k[:len(p)] != p {
		return ""
	}
	k = k[len(p):]
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '-' {
			return k[:i]
		}
	}
	return ""
}

func imageVersion(img *oci.Image, osr map[string]string) string {
	for _, v := range []string{img.Version, osr["IMAGE_VERSION"], osr["VERSION_ID"]} {
		if v != "" {
			return v
		}
	}
	return ""
}

func installImageBootFiles(boot *os.Root, v *imageView, bf *bootFiles) (string, error) {
	k, err := v.root.Open(bf.kernel)
	if err != nil {
		return "", err
	}
	defer k.Close()
	i, err := v.root.Open(bf.initrd)
	if err != nil {
		return "", err
	}
	defer i.Close()
	return InstallBootFiles(boot, k, i)
}

// commandLine is the new deployment's kernel command line: the booted entry's, changed
// by exactly what the images' kargs.d changed, or the new image's kargs.d for a first
// deployment; with the root selector of the new image.
func (s *Sysroot) commandLine(id composefs.Digest, nv, pv *imageView, booted *Deployment) (*kargs.Cmdline, error) {
	newArgs, present, err := nv.kargs()
	if err != nil {
		return nil, err
	}
	root := RootSelector(id, !s.repo.Store().VerityEnabled())
	if booted == nil {
		c := newArgs.Clone()
		c.AddOrModify(root)
		return c, nil
	}
	oldArgs, _, err := pv.kargs()
	if err != nil {
		return nil, err
	}
	return kargs.UpgradeCmdline(booted.Options, oldArgs, newArgs, present, root), nil
}

// writeState makes state/deploy/<id>: the merged etc/ and the origin, written under a
// temporary name and renamed into place whole.
func (s *Sysroot) writeState(ctx context.Context, id composefs.Digest, nv, pv *imageView, booted *Deployment, origin *Origin) error {
	final := s.join(stateDir(id))
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "etc"), 0o755); err != nil {
		return err
	}
	target, err := os.OpenRoot(filepath.Join(tmp, "etc"))
	if err != nil {
		return err
	}
	defer target.Close()
	newEtc, err := nv.sub("etc")
	if err != nil {
		return err
	}
	if newEtc == nil {
		return fmt.Errorf("image %s has no /etc", id)
	}
	defer newEtc.Close()
	if booted == nil {
		if err := CopyTree(ctx, newEtc, target); err != nil {
			return fmt.Errorf("copying the image's /etc: %w", err)
		}
	} else {
		pristine, err := pv.sub("etc")
		if err != nil {
			return err
		}
		if pristine == nil {
			return fmt.Errorf("the booted image %s has no /etc", booted.ID)
		}
		defer pristine.Close()
		current, err := os.OpenRoot(s.join(filepath.Join(stateDir(booted.ID), "etc")))
		if err != nil {
			return fmt.Errorf("the booted deployment's /etc: %w", err)
		}
		defer current.Close()
		if _, err := MergeEtc(ctx, pristine, current, newEtc, target, WithLogger(s.log)); err != nil {
			return err
		}
	}
	if err := s.mergeVar(ctx, nv, pv); err != nil {
		return err
	}
	failpoint.Step("deploy: etc and var merged")
	if err := atomicfile.WriteFile(filepath.Join(tmp, "origin"), origin.Bytes(), 0o644); err != nil {
		return err
	}
	failpoint.Step("deploy: origin written")
	// The old state of this id, if any (a deployment of the same image made before), is
	// replaced whole.
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	failpoint.Step("deploy: old state removed")
	return os.Rename(tmp, final)
}

func (s *Sysroot) mergeVar(ctx context.Context, nv, pv *imageView) error {
	newVar, err := nv.sub("var")
	if err != nil || newVar == nil {
		return err
	}
	defer newVar.Close()
	var oldVar *os.Root
	if pv != nil {
		if oldVar, err = pv.sub("var"); err != nil {
			return err
		}
		if oldVar != nil {
			defer oldVar.Close()
		}
	}
	host, err := os.OpenRoot(s.join(varDir))
	if err != nil {
		return err
	}
	defer host.Close()
	_, err = MergeVar(ctx, oldVar, newVar, host, WithLogger(s.log))
	return err
}
