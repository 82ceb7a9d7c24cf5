package deploy

import (
	"errors"
	"fmt"
	"os"

	"github.com/ociboot/ociboot/composefs"
)

// ensureVerity gives image id and every object it names fs-verity, enabling it on any
// that lack it, and reports whether the deployment can boot with verity=require
// (composefs=<id>) rather than without (composefs=?<id>). Objects and images written by
// the store on a filesystem with fs-verity have it already; those that came some other
// way do not: a root filesystem made by install (mkfs.ext4 -d copies no verity), or
// objects written before the filesystem's verity feature was turned on. false, with no
// error, means the filesystem or kernel has no fs-verity. An image or object whose
// content is not its name is an error: fsck names the damage.
func (s *Sysroot) ensureVerity(id composefs.Digest) (bool, error) {
	path := s.repo.ImagePath(id)
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("deployment %s: its composefs image: %w", id, err)
	}
	defer f.Close()
	if err := composefs.EnsureFileVerity(f, id); errors.Is(err, composefs.ErrVerityNotSupported) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("deployment %s: its composefs image: %w (run ociboot fsck)", id, err)
	}
	objs, err := s.repo.ImageObjects(id)
	if err != nil {
		return false, fmt.Errorf("deployment %s: %w", id, err)
	}
	store := s.repo.Store()
	for _, d := range objs {
		if err := store.EnsureVerity(d); errors.Is(err, composefs.ErrVerityNotSupported) {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("deployment %s: object %s: %w (run ociboot fsck)", id, d, err)
		}
	}
	return true, nil
}
