//go:build !linux

package composefs

import (
	"context"
	"errors"
	"fmt"
)

// The declarations below mirror mount_linux.go so that callers compile everywhere; only
// Linux has EROFS and overlayfs, so mounting fails elsewhere.

// VerityMode is overlayfs's verity option.
type VerityMode int

const (
	VerityOff VerityMode = iota
	VerityRequire
)

// ErrImageVerity means the image's fs-verity digest could not be measured.
var ErrImageVerity = errors.New("image has no fs-verity digest")

// ErrImageDigestMismatch means the image's fs-verity digest is not the expected one.
var ErrImageDigestMismatch = errors.New("image fs-verity digest mismatch")

// MountOption configures Mount.
type MountOption func(*mountConfig)

type mountConfig struct {
	verity      VerityMode
	digest      *Digest
	upper, work string
	source      string
}

// WithVerity sets overlayfs's verity mode.
func WithVerity(m VerityMode) MountOption { return func(c *mountConfig) { c.verity = m } }

// WithImageDigest makes Mount check the image's fs-verity digest.
func WithImageDigest(d Digest) MountOption { return func(c *mountConfig) { c.digest = &d } }

// WithUpperDir adds a writable upper layer.
func WithUpperDir(upper, work string) MountOption {
	return func(c *mountConfig) { c.upper, c.work = upper, work }
}

// WithSource sets the overlay's source as mountinfo shows it.
func WithSource(source string) MountOption { return func(c *mountConfig) { c.source = source } }

// errMountUnsupported is what Mount and Unmount return off Linux.
var errMountUnsupported = fmt.Errorf("composefs mounts need Linux (EROFS and overlayfs): %w", errors.ErrUnsupported)

// Mount fails: composefs mounts need Linux.
func Mount(ctx context.Context, image, objectsDir, target string, opts ...MountOption) error {
	return fmt.Errorf("mounting composefs image %s: %w", image, errMountUnsupported)
}

// Unmount fails: composefs mounts need Linux.
func Unmount(target string) error {
	return fmt.Errorf("unmounting %s: %w", target, errMountUnsupported)
}
