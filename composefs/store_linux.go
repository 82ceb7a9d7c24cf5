package composefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// syncFilesystem flushes the whole filesystem holding f: one syncfs(2) costs less than an
// fsync per object and per directory of a batch.
func syncFilesystem(f *os.File) error {
	err := unix.Syncfs(int(f.Fd()))
	runtime.KeepAlive(f)
	return err
}

// copyFileRangeChunk bounds each copy_file_range call, so ctx is checked between them.
const copyFileRangeChunk = 8 << 20

// copyFileData copies the first size bytes of src into the empty file dst, as cheaply as
// the filesystem allows: shared extents (FICLONE) on btrfs and XFS, an in-kernel copy
// (copy_file_range) elsewhere, and reads and writes when even that is refused (across
// filesystems on old kernels, or from special filesystems).
func copyFileData(ctx context.Context, dst, src *os.File, size int64) error {
	dfd, sfd := int(dst.Fd()), int(src.Fd())
	defer runtime.KeepAlive(src)
	defer runtime.KeepAlive(dst)
	if size > 0 && unix.IoctlFileClone(dfd, sfd) == nil {
		// A clone takes the whole file; the caller checks the size it got.
		return nil
	}
	var roff, woff int64
	for roff < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(size-roff, copyFileRangeChunk)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil && roff == 0 && fallbackFromCopyFileRange(err) {
			break
		}
		if err != nil {
			return fmt.Errorf("copying data: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("copying data: source ended at %d bytes, want %d", roff, size)
		}
	}
	if roff == size {
		return nil
	}
	n, err := copyWithContext(ctx, io.NewOffsetWriter(dst, 0), io.NewSectionReader(src, 0, size))
	if err != nil {
		return fmt.Errorf("copying data: %w", err)
	}
	if n != size {
		return fmt.Errorf("copying data: source ended at %d bytes, want %d", n, size)
	}
	return nil
}

// fallbackFromCopyFileRange tells the errors for which copy_file_range cannot do this
// copy at all, rather than failed doing it.
func fallbackFromCopyFileRange(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBADF)
}

// startWriteback starts writing f's data back to disk without waiting for it: the one
// syncfs that makes a batch durable then finds most of it on disk already, instead of
// flushing a whole image's worth at the end. Only a hint; an error changes nothing.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
