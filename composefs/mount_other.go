//go:build !linux

package composefs

import (
	"context"
	"errors"
	"fmt"
	"os"
)

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

// MountDetached fails: composefs mounts need Linux.
func MountDetached(ctx context.Context, image, objectsDir string, opts ...MountOption) (*os.File, error) {
	return nil, fmt.Errorf("mounting composefs image %s: %w", image, errMountUnsupported)
}
