package oci

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/opencontainers/go-digest"
)

// Whiteout names of the OCI image layout (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // AUFS's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
	whiteoutOpaque = ".wh..wh..opq"
	paxXattrPrefix = "SCHILY.xattr."
	// maxPathLen bounds the absolute path of an entry ("/" + Path): PATH_MAX less the NUL.
	maxPathLen = 4095
)

// IngestLayer reads one uncompressed layer tar from r to its end, writing each regular
// file above the inline limit (composefs.RecommendedInlineMax) to st, and returns the
// layer's entries with its diffID: the sha256 of every byte read, the end-of-archive
// blocks and whatever follows them included, so the caller can compare it with the
// image config's diff_ids. A stream that stops exactly between two entries reads as a
// complete tar (as with archive/tar and GNU tar); only that comparison catches it.
//
// Every header is hostile. Names are cleaned lexically; a leading "/" is dropped (an
// absolute name is relative to the image root, as docker and containerd read layers),
// and a name that escapes the root after cleaning ("../x", "a/../../x"), holds a NUL, has
// a component over 255 bytes or a path over 4095 bytes fails with ErrHostileEntry; names
// need not be UTF-8. Hard-link targets are cleaned the same way. Symlink targets are kept
// verbatim: nothing is extracted, so nothing ever follows them. Whiteouts become
// EntryWhiteout and EntryOpaque entries; one that names its own directory or a parent
// (".wh.", ".wh..", ".wh...") or sits in a path as a directory fails. AUFS bookkeeping
// (".wh..wh.plnk/..." at the top, any ".wh..wh.X" but the opaque marker) and PAX global
// headers are skipped. Tar types other than files, directories, links, devices and fifos
// fail with ErrInvalidEntry. Xattrs come from SCHILY.xattr.* PAX records only.
//
// A regular file's bytes go from the tar reader straight into st.Put, never held whole
// in memory; files up to the inline limit are kept in the entry instead, and st may be
// nil when a layer has no larger file. Nothing is made durable here: the caller syncs the
// store once per batch (Store.Sync). Objects written before an error stay in the store:
// they are content-addressed and unreferenced, for garbage collection to take.
//
// Duplicate paths are all recorded in tar order; ApplyLayers lets the later win.
func IngestLayer(ctx context.Context, r io.Reader, st *composefs.Store, opts ...IngestOption) (*Layer, error) {
	cfg := ingestConfig{inlineMax: composefs.RecommendedInlineMax}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxSize <= 0 {
		cfg.maxSize = DefaultMaxLayerSize
	}
	if cfg.maxMetadata <= 0 {
		cfg.maxMetadata = DefaultMaxLayerMetadata
	}
	sr := &streamReader{ctx: ctx, r: r, h: sha256.New(), limit: cfg.maxSize}
	tr := tar.NewReader(sr)
	in := &ingester{ctx: ctx, st: st, cfg: cfg}
	last := ""
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if last == "" {
				return nil, fmt.Errorf("reading layer tar: %w", err)
			}
			return nil, fmt.Errorf("reading layer tar after entry %q: %w", last, err)
		}
		if err := in.add(hdr, tr); err != nil {
			return nil, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		last = hdr.Name
	}
	if _, err := io.Copy(io.Discard, sr); err != nil {
		return nil, fmt.Errorf("reading layer tar after its end: %w", err)
	}
	return &Layer{DiffID: digest.NewDigest(digest.SHA256, sr.h), Entries: in.entries}, nil
}

// streamReader digests and counts the layer stream, stops it at the size bound and checks
// ctx before each read, so neither a bomb nor a cancelled pull reads on.
type streamReader struct {
	ctx      context.Context
	r        io.Reader
	h        hash.Hash
	n, limit int64
}

func (s *streamReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.n > s.limit {
		return 0, s.tooLarge()
	}
	// One byte past the bound is enough to know the stream crosses it.
	if room := s.limit - s.n; int64(len(p)) > room {
		p = p[:room+1]
	}
	m, err := s.r.Read(p)
	s.h.Write(p[:m])
	s.n += int64(m)
	if s.n > s.limit {
		return m, s.tooLarge()
	}
	return m, err
}

func (s *streamReader) tooLarge() error {
	return fmt.Errorf("%w: more than %d bytes uncompressed", ErrLayerTooLarge, s.limit)
}

// ingester turns headers into entries and keeps the layer's running totals.
type ingester struct {
	ctx     context.Context
	st      *composefs.Store
	cfg     ingestConfig
	content int64 // bytes of regular files so far
	meta    int64 // metadata bytes held by entries so far
	entries []Entry
}

// add converts one header (and its body, for a regular file) and records the entry.
func (in *ingester) add(hdr *tar.Header, body io.Reader) error {
	if err := in.ctx.Err(); err != nil {
		return err
	}
	e, ok, err := in.convert(hdr, body)
	if err != nil || !ok {
		return err
	}
	in.meta += entryCost(&e)
	if in.meta > in.cfg.maxMetadata {
		return fmt.Errorf("%w: entries hold more than %d bytes of metadata", ErrLayerTooLarge, in.cfg.maxMetadata)
	}
	in.entries = append(in.entries, e)
	return nil
}

func entryCost(e *Entry) int64 {
	n := int64(entryOverhead + len(e.Path) + len(e.Link) + len(e.Content))
	for _, x := range e.Xattrs {
		n += int64(len(x.Key) + len(x.Value) + 32)
	}
	return n
}

// convert makes the entry of one header; ok is false for headers that add nothing.
func (in *ingester) convert(hdr *tar.Header, body io.Reader) (e Entry, ok bool, err error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		// Defaults for the entries that follow; docker and containerd ignore them too.
		return Entry{}, false, nil
	}
	p, err := cleanName(hdr.Name)
	if err != nil {
		return Entry{}, false, err
	}
	if top, _, _ := strings.Cut(p, "/"); strings.HasPrefix(top, whiteoutMeta) && p != whiteoutOpaque {
		// AUFS bookkeeping at the top (.wh..wh.plnk/, .wh..wh.aufs), skipped as docker did.
		return Entry{}, false, nil
	}
	dir, base := splitPath(p)
	if hasWhiteoutComponent(dir) {
		return Entry{}, false, hostile("a whiteout name is used as a directory")
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return whiteoutEntry(dir, base)
	}
	e = Entry{Path: p, Mode: uint32(hdr.Mode & 0o7777)}
	if hdr.Uid < 0 || int64(hdr.Uid) > math.MaxUint32 || hdr.Gid < 0 || int64(hdr.Gid) > math.MaxUint32 {
		return Entry{}, false, invalid(fmt.Sprintf("owner %d:%d does not fit 32 bits", hdr.Uid, hdr.Gid))
	}
	e.UID, e.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	e.Mtime = composefs.Timespec{Sec: hdr.ModTime.Unix(), Nsec: uint32(hdr.ModTime.Nanosecond())}
	if e.Xattrs, err = paxXattrs(hdr.PAXRecords); err != nil {
		return Entry{}, false, err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		// archive/tar turns TypeRegA into TypeReg already, and expands sparse files; a
		// contiguous file is a regular one (GNU tar).
		e.Type = EntryRegular
	case tar.TypeDir:
		e.Type = EntryDir
	case tar.TypeSymlink:
		e.Type = EntrySymlink
		if err := checkSymlinkTarget(hdr.Linkname); err != nil {
			return Entry{}, false, err
		}
		e.Link = hdr.Linkname
	case tar.TypeLink:
		e.Type = EntryHardlink
		if e.Link, err = cleanLinkTarget(p, hdr.Linkname); err != nil {
			return Entry{}, false, err
		}
	case tar.TypeChar, tar.TypeBlock:
		e.Type = EntryChar
		if hdr.Typeflag == tar.TypeBlock {
			e.Type = EntryBlock
		}
		if hdr.Devmajor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor < 0 || hdr.Devminor > math.MaxUint32 {
			return Entry{}, false, invalid(fmt.Sprintf("device number %d:%d does not fit 32 bits", hdr.Devmajor, hdr.Devminor))
		}
		e.Rdev = mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		e.Type = EntryFifo
	default:
		return Entry{}, false, invalid(fmt.Sprintf("unsupported tar entry type %q", hdr.Typeflag))
	}
	if p == "" && e.Type != EntryDir {
		return Entry{}, false, hostile(fmt.Sprintf("a %s at the image root", e.Type))
	}
	if e.Type == EntryRegular {
		if err := in.regular(&e, hdr.Size, body); err != nil {
			return Entry{}, false, err
		}
	}
	return e, true, nil
}

// regular reads a regular file's content: inline if small, else into the store.
func (in *ingester) regular(e *Entry, size int64, body io.Reader) error {
	if size < 0 {
		return invalid(fmt.Sprintf("negative size %d", size))
	}
	// Checked before reading, so a sparse entry that expands to terabytes writes nothing.
	if size > in.cfg.maxSize-in.content {
		return fmt.Errorf("%w: regular files add up to more than %d bytes", ErrLayerTooLarge, in.cfg.maxSize)
	}
	in.content += size
	e.Size = uint64(size)
	if size <= in.cfg.inlineMax {
		if size > 0 {
			e.Content = make([]byte, size)
			if _, err := io.ReadFull(body, e.Content); err != nil {
				return fmt.Errorf("reading content: %w", err)
			}
		}
		return nil
	}
	if in.st == nil {
		return errors.New("a file of more than the inline limit needs an object store, and there is none")
	}
	d, n, err := in.st.Put(in.ctx, body)
	if err != nil {
		return err
	}
	if n != size {
		return invalid(fmt.Sprintf("content is %d bytes, the header says %d", n, size))
	}
	e.Digest = &d
	return nil
}

// whiteoutEntry decodes a whiteout name found in dir.
func whiteoutEntry(dir, base string) (Entry, bool, error) {
	if base == whiteoutOpaque {
		return Entry{Type: EntryOpaque, Path: dir}, true, nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		// Whiteouts of names that are themselves whiteouts: nothing an image can hold.
		return Entry{}, false, nil
	}
	switch name := base[len(whiteoutPrefix):]; name {
	case "", ".", "..":
		return Entry{}, false, hostile(fmt.Sprintf("whiteout %q names its own directory or a parent", base))
	default:
		return Entry{Type: EntryWhiteout, Path: joinPath(dir, name)}, true, nil
	}
}

// cleanName makes an Entry path of a header's name (see IngestLayer); the root is "".
func cleanName(unsafeName string) (string, error) {
	if strings.IndexByte(unsafeName, 0) >= 0 {
		return "", hostile("name contains a NUL byte")
	}
	p := path.Clean(strings.TrimLeft(unsafeName, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", hostile("path escapes the image root")
	}
	if p == "." {
		return "", nil
	}
	if err := checkPathLimits(p); err != nil {
		return "", err
	}
	return p, nil
}

// checkPathLimits enforces the kernel's limits on a clean relative path.
func checkPathLimits(p string) error {
	if len(p)+1 > maxPathLen {
		return hostile(fmt.Sprintf("path of %d bytes is over the limit of %d", len(p)+1, maxPathLen))
	}
	for rest := p; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		if len(c) > composefs.MaxNameLen {
			return hostile(fmt.Sprintf("name of %d bytes is over the limit of %d", len(c), composefs.MaxNameLen))
		}
	}
	return nil
}

// cleanLinkTarget cleans a hard link's target, which is a path from the image root like
// an entry's name, never relative to the link.
func cleanLinkTarget(p, unsafeTarget string) (string, error) {
	t, err := cleanName(unsafeTarget)
	if err != nil {
		return "", hostile(fmt.Sprintf("hard-link target %q: %v", unsafeTarget, err))
	}
	switch {
	case t == "":
		return "", hostile("hard link to the image root")
	case t == p:
		return "", hostile("hard link to itself")
	case hasWhiteoutComponent(t):
		return "", hostile(fmt.Sprintf("hard-link target %q is a whiteout name", unsafeTarget))
	}
	return t, nil
}

func checkSymlinkTarget(target string) error {
	switch {
	case target == "":
		return invalid("symlink with an empty target")
	case strings.IndexByte(target, 0) >= 0:
		return hostile("symlink target contains a NUL byte")
	case len(target) > composefs.MaxSymlinkLen:
		return invalid(fmt.Sprintf("symlink target of %d bytes is over the limit of %d", len(target), composefs.MaxSymlinkLen))
	}
	return nil
}

// paxXattrs collects the SCHILY.xattr.* records, sorted by name so that equal layers
// give equal entries whatever the map order.
func paxXattrs(recs map[string]string) ([]composefs.Xattr, error) {
	var xs []composefs.Xattr
	for k, v := range recs {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if err := checkXattr(name, len(v)); err != nil {
			return nil, err
		}
		xs = append(xs, composefs.Xattr{Key: name, Value: []byte(v)})
	}
	slices.SortFunc(xs, func(a, b composefs.Xattr) int { return strings.Compare(a.Key, b.Key) })
	return xs, nil
}

func checkXattr(name string, valueLen int) error {
	switch {
	case name == "":
		return invalid("xattr with an empty name")
	case strings.IndexByte(name, 0) >= 0:
		// The kernel would read the name up to the NUL: a way to smuggle another key.
		return hostile(fmt.Sprintf("xattr name %q contains a NUL byte", name))
	case len(name) > composefs.MaxXattrKeyLen:
		return invalid(fmt.Sprintf("xattr name of %d bytes is over the limit of %d", len(name), composefs.MaxXattrKeyLen))
	case valueLen > composefs.MaxXattrValueLen:
		return invalid(fmt.Sprintf("xattr %q value of %d bytes is over the limit of %d", name, valueLen, composefs.MaxXattrValueLen))
	}
	return nil
}

// mkdev encodes a device number as glibc's makedev does, whatever the build platform.
func mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (ma&0xfffff000)<<32 | (ma&0xfff)<<8 | (mi&0xffffff00)<<12 | mi&0xff
}

// splitPath splits a clean relative path into its directory ("" for the root) and base.
func splitPath(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func hasWhiteoutComponent(p string) bool {
	return strings.HasPrefix(p, whiteoutPrefix) || strings.Contains(p, "/"+whiteoutPrefix)
}
