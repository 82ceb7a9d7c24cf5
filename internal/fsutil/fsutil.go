// Package fsutil holds small filesystem helpers the packages that manage a sysroot share.
package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// ReadDirNames lists a directory's names, sorted; a missing directory has none.
func ReadDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}

// DiskUsage is the space p takes on disk (allocated blocks), a directory's files
// included; what cannot be read counts as 0.
func DiskUsage(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(q string, _ fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := os.Lstat(q); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}
