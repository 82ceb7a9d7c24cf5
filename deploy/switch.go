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

// DeployOption tunes Deploy.
type DeployOption func(*deployOptions)

type deployOptions struct {
	downloadOnly       bool
	addKargs, delKargs []string // WithExtraKargs
}

// WithDownloadOnly stages the deployment locked for finalization (bootc's upgrade
// --download-only): FinalizeStaged leaves it staged, so it is applied only once
// SetStagedDownloadOnly(false) unlocks it, and never if the host reboots first. Only
// on a running host.
func WithDownloadOnly(v bool) DeployOption { return func(o *deployOptions) { o.downloadOnly = v } }

// Deploy makes a deployment of img and makes it the default, keeping the booted
// deployment as the rollback and the pinned ones after it. The host's /etc and /var
// come along through the three-way merges, and the kernel command line follows the
// images' kargs.d (kargs.UpgradeCmdline).
//
// On a sysroot that is not running the change takes effect at once, and the default
// entry's deployment counts as booted. On a running host (WithRunning) the deployment
// is staged instead (see stage): its /etc is merged and the boot entries switched by
// FinalizeStaged, at shutdown, so that edits made to /etc until then are kept.
//
// The image already booted is ErrNoChange; on a running host, the image already staged
// is ErrStagedUnchanged.
func (s *Sysroot) Deploy(ctx context.Context, img *oci.Image, opts ...DeployOption) (*Deployment, error) {
	var o deployOptions
	for _, opt := range opts {
		opt(&o)
	}
	if s.running {
		return s.stage(ctx, img, o)
	}
	if o.downloadOnly {
		return nil, errors.New("download-only stages for a running host: a root that is not running takes a deployment at once")
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
	nd, origin, err := s.prepareBoot(boot, img, nv, pv, booted, o)
	if err != nil {
		return nil, err
	}
	if err := s.writeState(ctx, img.ComposefsDigest, origin, func(target *os.Root) error {
		return s.mergeEtcVar(ctx, nv, pv, booted, target)
	}); err != nil {
		return nil, err
	}
	failpoint.Step("deploy: state renamed into place")
	if err := s.Sync(); err != nil {
		return nil, err
	}
	failpoint.Step("deploy: synced")
	order := []DeploymentBoot{nd}
	if booted != nil {
		order = append(order, bootOf(booted))
	}
	order = append(order, pinnedBoots(deps, 0, img.ComposefsDigest)...)
	entries, err := OrderEntries(nv.osRelease()["ID"], order)
	if err != nil {
		return nil, err
	}
	if err := WriteBootSet(boot, entries); err != nil {
		return nil, err
	}
	return s.deploymentOf(entries[0])
}

// prepareBoot installs the new image's kernel and initramfs and computes its entry and
// origin. base is the deployment whose command line the new one's follows (the booted
// one, or a staged one it replaces), bv a view of base's image; both nil for a first
// deployment.
func (s *Sysroot) prepareBoot(boot *os.Root, img *oci.Image, nv, bv *imageView, base *Deployment, o deployOptions) (DeploymentBoot, *Origin, error) {
	bf, err := nv.bootFiles()
	if err != nil {
		return DeploymentBoot{}, nil, err
	}
	bootDir, err := installImageBootFiles(boot, nv, bf)
	if err != nil {
		return DeploymentBoot{}, nil, err
	}
	failpoint.Step("deploy: boot files installed")
	options, err := s.commandLine(img.ComposefsDigest, nv, bv, base)
	if err != nil {
		return DeploymentBoot{}, nil, err
	}
	if err := o.editKargs(options); err != nil {
		return DeploymentBoot{}, nil, err
	}
	origin := &Origin{Transport: img.Transport, Image: img.Ref, ManifestDigest: img.ManifestDigest.String(),
		BootDigest: filepath.Base(bootDir), Deployed: time.Now().UTC()}
	linux, initrd := BootFilePaths(bootDir)
	osr := nv.osRelease()
	// A new deployment boots on trial (systemd-boot's boot counting): if it fails to boot
	// DefaultBootTries times, the boot loader passes it over for the next entry.
	return DeploymentBoot{Digest: img.ComposefsDigest.String(), Title: osr["PRETTY_NAME"], Version: imageVersion(img, osr),
		Linux: linux, Initrd: []string{initrd}, Options: options.String(), Counter: NewBootTrial(0)}, origin, nil
}

// pinnedBoots are the entries of the pinned deployments a new set keeps after the new
// one and the booted one: deps but the booted one (index booted) and any of image skip.
func pinnedBoots(deps []*Deployment, booted int, skip composefs.Digest) []DeploymentBoot {
	var out []DeploymentBoot
	for i, d := range deps {
		if i != booted && d.Origin != nil && d.Origin.Pinned && d.ID != skip {
			out = append(out, bootOf(d))
		}
	}
	return out
}

// Rollback makes the rollback deployment the default, and the booted one the rollback:
// a second Rollback undoes the first. The rollback deployment is the first one, in boot
// order, that is not booted; when it already boots next (a rollback is queued, or a
// finalized deployment waits for the reboot) the booted one is put first again.
//
// On a running host a staged deployment is discarded first, and the new order is
// written at once (as bootc does: a rollback merges nothing, so there is nothing to
// wait for); reboot-required is written when the next boot is not the booted one.
func (s *Sysroot) Rollback(ctx context.Context) error {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return err
	}
	bi, err := s.bootedIndex(deps)
	if err != nil {
		return err
	}
	if len(deps) < 2 {
		return fmt.Errorf("%w: only %d deployment", ErrNoRollback, len(deps))
	}
	first := 1 // the rollback deployment
	if bi != 0 {
		first = bi // queued: back to the booted one
	}
	// Every entry keeps its boot counter (bootc and ostree do not put a rollback target on
	// trial: it booted before), except that one with no tries left gets a new trial:
	// systemd-boot sorts such an entry last, so the rollback would not take effect.
	target := bootOf(deps[first])
	if c := target.Counter; c != nil && c.Left == 0 {
		target.Counter = NewBootTrial(0)
	}
	order := []DeploymentBoot{target, bootOf(deps[0])}
	for i, d := range deps {
		if i != first && i != 0 {
			order = append(order, bootOf(d))
		}
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
	if s.running {
		if err := s.discardStaged(boot); err != nil {
			return err
		}
	}
	if err := WriteBootSet(boot, entries); err != nil {
		return err
	}
	if s.running && bi == 0 {
		return s.writeRebootRequired()
	}
	return nil
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

// commandLine is the new deployment's kernel command line: base's (the booted entry's,
// or a staged one's), changed by exactly what the images' kargs.d changed (base's image
// is pv), or the new image's kargs.d for a first deployment; with the root selector of
// the new image.
func (s *Sysroot) commandLine(id composefs.Digest, nv, pv *imageView, base *Deployment) (*kargs.Cmdline, error) {
	newArgs, present, err := nv.kargs()
	if err != nil {
		return nil, err
	}
	verity, err := s.ensureVerity(id)
	if err != nil {
		return nil, err
	}
	root := RootSelector(id, !verity)
	if base == nil {
		c := newArgs.Clone()
		c.AddOrModify(root)
		return c, nil
	}
	oldArgs, _, err := pv.kargs()
	if err != nil {
		return nil, err
	}
	return kargs.UpgradeCmdline(base.Options, oldArgs, newArgs, present, root), nil
}

// writeState makes state/deploy/<id>: an etc/ that fill writes (an empty directory when
// it is called) and the origin, written under a temporary name and renamed into place
// whole.
func (s *Sysroot) writeState(ctx context.Context, id composefs.Digest, origin *Origin, fill func(etc *os.Root) error) error {
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
	if err := fill(target); err != nil {
		return err
	}
	failpoint.Step("deploy: etc written")
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

// mergeEtcVar fills target, the new deployment's etc/, with the image's /etc and the
// host's changes to the booted one's (a plain copy for a first deployment), and merges
// the new image's /var into the host's.
func (s *Sysroot) mergeEtcVar(ctx context.Context, nv, pv *imageView, booted *Deployment, target *os.Root) error {
	newEtc, err := nv.sub("etc")
	if err != nil {
		return err
	}
	if newEtc == nil {
		return fmt.Errorf("image %s has no /etc", nv.digest)
	}
	defer newEtc.Close()
	if booted == nil {
		if err := CopyTree(ctx, newEtc, target); err != nil {
			return fmt.Errorf("copying the image's /etc: %w", err)
		}
	} else {
		pristine, current, err := s.hostEtc(pv, booted.ID)
		if err != nil {
			return err
		}
		defer pristine.Close()
		defer current.Close()
		if _, err := MergeEtc(ctx, pristine, current, newEtc, target, WithLogger(s.log)); err != nil {
			return err
		}
	}
	return s.mergeVar(ctx, nv, pv)
}

// hostEtc opens the booted deployment's pristine /etc (in its image, pv) and its live
// one (state/deploy/<booted>/etc).
func (s *Sysroot) hostEtc(pv *imageView, booted composefs.Digest) (pristine, current *os.Root, err error) {
	if pristine, err = pv.sub("etc"); err != nil {
		return nil, nil, err
	}
	if pristine == nil {
		return nil, nil, fmt.Errorf("the booted image %s has no /etc", booted)
	}
	current, err = os.OpenRoot(s.join(filepath.Join(stateDir(booted), "etc")))
	if err != nil {
		pristine.Close()
		return nil, nil, fmt.Errorf("the booted deployment's /etc: %w", err)
	}
	return pristine, current, nil
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
