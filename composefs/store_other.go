//go:build !linux

package composefs

import (
	"context"
	"fmt"
	"io"
	"os"
)

// syncFilesystem has no syncfs to call: it syncs the store's directory only.
func syncFilesystem(f *os.File) error { return f.Sync() }

// copyFileData copies the first size bytes of src into dst by reading and writing.
func copyFileData(ctx context.Context, dst, src *os.File, size int64) error {
	n, err := copyWithContext(ctx, io.NewOffsetWriter(dst, 0), io.NewSectionReader(src, 0, size))
	if err != nil {
		return fmt.Errorf("copying data: %w", err)
	}
	if n != size {
		return fmt.Errorf("copying data: source ended at %d bytes, want %d", n, size)
	}
	return nil
}

// startWriteback is a Linux hint; elsewhere the final sync does all the work.
func startWriteback(f *os.File) {}
