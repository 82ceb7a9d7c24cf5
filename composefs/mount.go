package composefs

import "errors"

// The mount options and errors, the same on every platform; Mount itself is in
// mount_linux.go (and fails elsewhere, mount_other.go).

// VerityMode is overlayfs's verity option: whether the kernel checks each backing object's
// fs-verity digest against the one the image records when the object is opened.
type VerityMode int

const (
	// VerityOff mounts with verity=off: objects are used without checking their digest.
	VerityOff VerityMode = iota
	// VerityRequire mounts with verity=require: opening a file whose object lacks
	// fs-verity, or whose image entry records no digest, fails with EIO.
	VerityRequire
)

// ErrImageVerity means WithImageDigest could not measure the image because it has no
// fs-verity digest: verity is not enabled on the file, or its filesystem or kernel lacks it.
var ErrImageVerity = errors.New("image has no fs-verity digest")

// ErrImageDigestMismatch means the image's fs-verity digest is not the one WithImageDigest
// expects: the file is not the image the caller meant to mount.
var ErrImageDigestMismatch = errors.New("image fs-verity digest mismatch")

// MountOption configures Mount.
type MountOption func(*mountConfig)

type mountConfig struct {
	verity      VerityMode
	digest      *Digest
	upper, work string
	source      string // the overlay's source as mountinfo shows it; "" is mountSource

	// Test hooks, so that every path through Mount runs on a kernel that needs none of
	// the fallbacks: skip file-backed EROFS, or skip the new mount API altogether.
	forceLoop, forceLegacy bool
}

// WithVerity sets overlayfs's verity mode (default VerityOff).
func WithVerity(m VerityMode) MountOption { return func(c *mountConfig) { c.verity = m } }

// WithImageDigest makes Mount measure the image file's fs-verity digest first and refuse
// to mount it unless it is d, as mount.composefs -o digest= does. This needs fs-verity
// enabled on the image; without it Mount fails with ErrImageVerity.
func WithImageDigest(d Digest) MountOption { return func(c *mountConfig) { c.digest = &d } }

// WithUpperDir adds a writable upper layer (upper and work on the same filesystem, as
// overlayfs requires). Without it the mount is read-only.
func WithUpperDir(upper, work string) MountOption {
	return func(c *mountConfig) { c.upper, c.work = upper, work }
}

// WithSource sets the overlay's source, what /proc/self/mountinfo shows for the mount
// (default "composefs"). The booted root is mounted with "composefs:<digest>", as bootc
// does, so that the deployment is recognised from the / mount.
func WithSource(source string) MountOption { return func(c *mountConfig) { c.source = source } }
