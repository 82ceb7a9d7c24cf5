// Package composefs writes and reads composefs images and keeps the content-addressed object
// store they point into.
//
// A composefs image is an EROFS filesystem holding only metadata: every regular file larger
// than a few bytes is a stub whose overlayfs xattrs (trusted.overlay.redirect and
// trusted.overlay.metacopy) name an object in the store by its fs-verity digest. Mounted as
// the lower layer of an overlay with the store as a data-only layer, it shows the full tree;
// with verity=require the kernel checks each object's fs-verity digest when it is opened.
//
// The pieces:
//   - Node: the in-memory tree that the dump parser, the directory scan and the OCI layer
//     ingest fill, and that the writer and the dump printer read.
//   - WriteImage: the EROFS writer, byte-identical to libcomposefs's mkcomposefs 1.0.8 for
//     format versions 0 and 1, so an image's digest is reproducible by anyone.
//   - The dump format (composefs-dump(5)): ParseDump and WriteDump.
//   - ReadImage: an image reader that gives back the tree a dump would describe.
//   - Store: objects named by their fs-verity digest, written once, verified by Fsck.
//   - fs-verity digests computed in userspace while streaming, and enabled by ioctl where
//     the filesystem supports it.
//   - Mount: erofs plus overlay, as mount.composefs does.
//
// This package imports only the standard library and golang.org/x/sys; it never logs.
package composefs
