package composefs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// The composefs-dump(5) reader. Semantics follow mkcomposefs 1.0.8 (tools/mkcomposefs.c):
// a dump it accepts gives the tree mkcomposefs would build, so WriteImage of the result
// matches mkcomposefs --from-file byte for byte. Where mkcomposefs accepts garbage by
// accident (signs, blanks and overflow in numbers, a DIGEST that is not 64 hex digits,
// NUL bytes smuggled into names, targets or keys through \x00), this parser refuses
// instead: no tool writes such dumps, and what mkcomposefs makes of them is undefined or
// truncated. The one exception is a missing or empty DIGEST, which is taken as none.

// DumpOption configures ParseDump.
type DumpOption func(*dumpConfig)

type dumpConfig struct {
	strict bool
}

// DumpStrict turns on the checks mkcomposefs makes under CFS_PARSE_STRICT: a symlink's
// SIZE must equal its target's length and it may have no CONTENT, RDEV must be 0 except on
// devices, and the last line must end in a newline.
func DumpStrict() DumpOption {
	return func(c *dumpConfig) { c.strict = true }
}

// DumpError is a dump that could not be parsed: the 1-based line at fault (0 when the
// fault is the whole input, an empty dump) and the path the line named (empty if the
// path itself was unreadable).
type DumpError struct {
	Line int
	Path string
	Err  error
}

func (e *DumpError) Error() string {
	switch {
	case e.Line == 0:
		return "dump: " + e.Err.Error()
	case e.Path == "":
		return fmt.Sprintf("dump line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("dump line %d (%s): %v", e.Line, e.Path, e.Err)
}

func (e *DumpError) Unwrap() error { return e.Err }

// Limits of the dump input beyond those of the tree (tree.go).
const (
	// maxXattrText bounds the text after the fixed fields, escapes included. mkcomposefs
	// caps it because it sets xattrs in quadratic time.
	maxXattrText = math.MaxUint16
	// maxDumpXattrSize is the per-inode xattr budget mkcomposefs checks for dump input:
	// 12 header bytes plus 7 + len(key) + len(value) per xattr.
	maxDumpXattrSize = math.MaxInt16
	// maxChunks is LCFS_MAX_NONINLINE_CHUNKS: the chunk map of a larger external file
	// does not fit the format.
	maxChunks = 1024
)

// Fixed fields of a line, in order.
const (
	fieldPath = iota
	fieldSize
	fieldMode
	fieldNlink
	fieldUID
	fieldGID
	fieldRdev
	fieldMtime
	fieldPayload
	fieldContent
	fieldDigest
	numFields
)

// errXattrText is the one limit a printed tree can break on re-reading: escaping may make
// the xattr text up to four times longer than the bytes it encodes.
var errXattrText = errors.New("xattrs take more than 65535 bytes of text")

// ParseDump reads a composefs-dump(5) text and returns the root of the tree it describes.
// Every error is a *DumpError.
func ParseDump(r io.Reader, opts ...DumpOption) (*Node, error) {
	p := &dumpParser{r: bufio.NewReaderSize(r, 64<<10)}
	for _, o := range opts {
		o(&p.cfg)
	}
	return p.parse()
}

// pendingLink is a hard-link line waiting for the end of the input, since its target may
// come later. Until then a placeholder of the line's mode holds its name, so that later
// lines cannot take the name or use it as a directory.
type pendingLink struct {
	line        int
	path        string
	target      string
	parent      *Node
	name        string
	placeholder *Node
}

type dumpParser struct {
	cfg  dumpConfig
	r    *bufio.Reader
	buf  []byte
	line int // number of the line being parsed, from 1
	root *Node

	links        []pendingLink
	placeholders map[*Node]int // placeholder -> index in links

	// Dumps list siblings together, so the last parent looked up is usually the next.
	lastDirPart string
	lastParent  *Node
}

func (p *dumpParser) parse() (*Node, error) {
	unterminated := false
	for {
		text, newline, err := p.readLine()
		if err == io.EOF {
			break
		}
		p.line++
		if err != nil {
			return nil, &DumpError{Line: p.line, Err: fmt.Errorf("reading dump: %w", err)}
		}
		if path, err := p.parseLine(text); err != nil {
			return nil, &DumpError{Line: p.line, Path: path, Err: err}
		}
		if !newline {
			unterminated = true
			break
		}
	}
	if p.root == nil {
		return nil, &DumpError{Err: errors.New("empty dump: no root line")}
	}
	if err := p.resolveLinks(); err != nil {
		return nil, err
	}
	// Checked last so that a broken final line reports what is wrong with it.
	if unterminated && p.cfg.strict {
		return nil, &DumpError{Line: p.line, Err: errors.New("missing newline at end of the last line")}
	}
	return p.root, nil
}

// readLine returns the next line without its newline, and whether it had one. The slice
// is valid until the next call. io.EOF means no more lines.
func (p *dumpParser) readLine() ([]byte, bool, error) {
	p.buf = p.buf[:0]
	for {
		chunk, err := p.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			p.buf = append(p.buf, chunk...)
			continue
		}
		if len(p.buf) > 0 {
			p.buf = append(p.buf, chunk...)
			chunk = p.buf
		}
		switch {
		case err == nil:
			return chunk[:len(chunk)-1], true, nil
		case err == io.EOF && len(chunk) > 0:
			return chunk, false, nil
		}
		return nil, false, err
	}
}

// parseLine adds one line's entry to the tree. It returns the line's path for the error.
func (p *dumpParser) parseLine(line []byte) (string, error) {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return "", fmt.Errorf("NUL byte at offset %d", i)
	}
	// Fields are separated by exactly one space; the text after DIGEST is the xattrs.
	// Missing fields are empty, as in mkcomposefs: an error for numbers, nothing for
	// the optional ones.
	var f [numFields][]byte
	rest := line
	nf := 0
	for ; nf < numFields && rest != nil; nf++ {
		if j := bytes.IndexByte(rest, ' '); j >= 0 {
			f[nf], rest = rest[:j], rest[j+1:]
		} else {
			f[nf], rest = rest, nil
		}
	}
	if nf <= fieldMtime {
		// Every line needs PATH through MTIME; naming the count says more than the
		// first empty number would.
		return string(f[fieldPath]), fmt.Errorf("only %d of the 11 fields (PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST)", nf)
	}

	rawPath, err := unescape(f[fieldPath])
	if err != nil {
		return "", fmt.Errorf("PATH: %w", err)
	}
	if len(rawPath) == 0 {
		return "", errors.New("empty PATH")
	}
	path := string(rawPath)

	modeField, hardlink := f[fieldMode], false
	if len(modeField) > 0 && modeField[0] == '@' {
		modeField, hardlink = modeField[1:], true
	}
	mode64, ok := parseUint(modeField, 8, math.MaxUint64)
	if !ok {
		return path, fmt.Errorf("invalid MODE %s", shortQuote(f[fieldMode]))
	}
	// EROFS keeps 16 bits of mode. mkcomposefs keeps more in memory but writes the same
	// 16, and hands the type check only S_IFMT, so dropping the rest changes no image.
	mode := uint32(mode64) & 0o177777
	if !validFileType(mode) {
		return path, fmt.Errorf("invalid file type in MODE %s", shortQuote(f[fieldMode]))
	}

	parent, name, err := p.place(path, mode)
	if err != nil {
		return path, err
	}

	if hardlink {
		return path, p.addHardlink(f, path, parent, name, mode)
	}
	node, err := p.inode(f, mode)
	if err != nil {
		return path, err
	}
	if len(rest) > 0 {
		if err := parseXattrs(node, rest); err != nil {
			return path, err
		}
	}
	if parent == nil {
		p.root = node
		return path, nil
	}
	if err := parent.Add(name, node); err != nil {
		return path, fmt.Errorf("adding %q: %w", name, err)
	}
	return path, nil
}

func validFileType(mode uint32) bool {
	switch mode & ModeTypeMask {
	case ModeReg, ModeDir, ModeSymlink, ModeChar, ModeBlock, ModeFifo, ModeSocket:
		return true
	}
	return false
}

// place finds the directory a path goes in and checks the final name, as mkcomposefs's
// lookup_parent_path does: leading slashes are skipped, runs of slashes separate
// components, and the final name is what follows the last slash. A nil parent means the
// path is the root.
func (p *dumpParser) place(path string, mode uint32) (*Node, string, error) {
	if path == "/" {
		if p.root != nil {
			return nil, "", errors.New("second root line")
		}
		if mode&ModeTypeMask != ModeDir {
			return nil, "", errors.New("root must be a directory")
		}
		return nil, "", nil
	}
	if p.root == nil {
		return nil, "", errors.New("first line must be the root directory /")
	}
	s := path
	for len(s) > 0 && s[0] == '/' {
		s = s[1:]
	}
	dirPart, name := "", s
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			dirPart, name = s[:i], s[i+1:]
			break
		}
	}
	parent := p.root
	if dirPart != "" {
		if dirPart == p.lastDirPart && p.lastParent != nil {
			parent = p.lastParent
		} else {
			var err error
			if parent, err = p.lookupDir(dirPart); err != nil {
				return nil, "", err
			}
			p.lastDirPart, p.lastParent = dirPart, parent
		}
	}
	if err := ValidName(name); err != nil {
		return nil, "", err
	}
	if parent.Lookup(name) != nil {
		return nil, "", fmt.Errorf("%w: %s", ErrExist, path)
	}
	return parent, name, nil
}

// lookupDir walks the slash-separated components of dir from the root; each must exist
// and be a directory.
func (p *dumpParser) lookupDir(dir string) (*Node, error) {
	cur := p.root
	for dir != "" {
		var comp string
		if comp, dir = nextComponent(dir); comp == "" {
			continue
		}
		next := cur.Lookup(comp)
		switch {
		case next == nil:
			return nil, fmt.Errorf("parent directory missing: %q not found in %s", comp, cur.Path())
		case !next.IsDir():
			return nil, fmt.Errorf("parent %s is not a directory", next.Path())
		}
		cur = next
	}
	return cur, nil
}

// inode builds the node of a non-hardlink line from its fixed fields.
func (p *dumpParser) inode(f [numFields][]byte, mode uint32) (*Node, error) {
	size, ok := parseUint(f[fieldSize], 10, math.MaxUint64)
	if !ok {
		return nil, fmt.Errorf("invalid SIZE %s", shortQuote(f[fieldSize]))
	}
	nlink, ok := parseUint(f[fieldNlink], 10, math.MaxUint32)
	if !ok {
		return nil, fmt.Errorf("invalid NLINK %s", shortQuote(f[fieldNlink]))
	}
	uid, ok := parseUint(f[fieldUID], 10, math.MaxUint32)
	if !ok {
		return nil, fmt.Errorf("invalid UID %s", shortQuote(f[fieldUID]))
	}
	gid, ok := parseUint(f[fieldGID], 10, math.MaxUint32)
	if !ok {
		return nil, fmt.Errorf("invalid GID %s", shortQuote(f[fieldGID]))
	}
	rdev, ok := parseUint(f[fieldRdev], 10, math.MaxUint64)
	if !ok {
		return nil, fmt.Errorf("invalid RDEV %s", shortQuote(f[fieldRdev]))
	}
	mtime, err := parseMtime(f[fieldMtime])
	if err != nil {
		return nil, err
	}
	payload, err := optional("PAYLOAD", f[fieldPayload])
	if err != nil {
		return nil, err
	}
	content, err := optional("CONTENT", f[fieldContent])
	if err != nil {
		return nil, err
	}
	if content != nil && uint64(len(content)) != size {
		return nil, fmt.Errorf("CONTENT has %d bytes but SIZE is %d", len(content), size)
	}
	hexDigest, err := optional("DIGEST", f[fieldDigest])
	if err != nil {
		return nil, err
	}
	var digest *Digest
	if len(hexDigest) > 0 {
		// mkcomposefs does not check the digest and writes undefined bytes for a short
		// one, an empty or missing field included; here that is no digest.
		d, err := ParseDigest(string(hexDigest))
		if err != nil {
			return nil, fmt.Errorf("invalid DIGEST: %w", err)
		}
		digest = &d
	}

	typ := mode & ModeTypeMask
	isDev := typ == ModeChar || typ == ModeBlock
	if p.cfg.strict && !isDev && rdev != 0 {
		return nil, fmt.Errorf("RDEV %d on a file that is not a device", rdev)
	}

	n := NewNode(mode)
	n.Nlink, n.UID, n.GID, n.Mtime = uint32(nlink), uint32(uid), uint32(gid), mtime
	if isDev {
		n.Rdev = rdev
	}
	if typ == ModeSymlink {
		switch {
		case len(payload) == 0:
			return nil, errors.New("symlink target missing")
		case len(payload) > MaxSymlinkLen:
			return nil, fmt.Errorf("symlink target of %d bytes is longer than %d", len(payload), MaxSymlinkLen)
		case bytes.IndexByte(payload, 0) >= 0:
			return nil, errors.New("symlink target contains a NUL byte")
		case p.cfg.strict && size != uint64(len(payload)):
			return nil, fmt.Errorf("symlink SIZE %d does not match its target's length %d", size, len(payload))
		case p.cfg.strict && len(content) > 0:
			return nil, errors.New("symlink cannot have CONTENT")
		}
		n.Payload = string(payload)
		n.Size = uint64(len(payload))
		return n, nil
	}
	// mkcomposefs checks these for every other type, though only regular files use them.
	if len(payload) > MaxPayloadLen {
		return nil, fmt.Errorf("PAYLOAD of %d bytes is longer than %d", len(payload), MaxPayloadLen)
	}
	if len(content) > MaxInlineContent {
		return nil, fmt.Errorf("inline CONTENT of %d bytes is larger than %d", len(content), MaxInlineContent)
	}
	if typ != ModeReg {
		// Directories get their size from their entries; payload, content and digest
		// never reach the image for these types. A special file's SIZE is kept: it is
		// written as 0, but mkcomposefs lets it choose between compact and extended
		// inodes, and byte identity follows that.
		if typ != ModeDir {
			n.Size = size
		}
		return n, nil
	}
	if bytes.IndexByte(payload, 0) >= 0 {
		return nil, errors.New("PAYLOAD contains a NUL byte")
	}
	if c := chunkCount(size); c > maxChunks {
		return nil, fmt.Errorf("file too large: %d bytes need %d chunks, the format holds %d", size, c, maxChunks)
	}
	n.Size = size
	n.Payload = string(payload)
	if len(content) > 0 {
		n.Content = content
	}
	n.Digest = digest
	return n, nil
}

// chunkCount is the number of chunks the writer splits an external file into: one chunk
// of 2^chunkbits bytes up to 8 TiB, more above.
func chunkCount(size uint64) uint64 {
	if size == 0 {
		return 0
	}
	chunkBits := min(max(bits.Len64(size-1), 12), 12+31)
	c := size >> chunkBits
	if size&(1<<chunkBits-1) != 0 {
		c++
	}
	return c
}

// addHardlink records a hard-link line, "PATH SIZE @MODE ... PAYLOAD ...": only the path,
// the mode and the target path in PAYLOAD count, the rest is not read (as in mkcomposefs).
func (p *dumpParser) addHardlink(f [numFields][]byte, path string, parent *Node, name string, mode uint32) error {
	if mode&ModeTypeMask == ModeDir {
		return errors.New("directories cannot be hardlinked")
	}
	target, err := optional("PAYLOAD", f[fieldPayload])
	switch {
	case err != nil:
		return err
	case len(target) == 0:
		return errors.New("hardlink target missing")
	case bytes.IndexByte(target, 0) >= 0:
		return errors.New("hardlink target contains a NUL byte")
	}
	placeholder := NewNode(mode)
	if err := parent.Add(name, placeholder); err != nil {
		return fmt.Errorf("adding %q: %w", name, err)
	}
	if p.placeholders == nil {
		p.placeholders = map[*Node]int{}
	}
	p.placeholders[placeholder] = len(p.links)
	p.links = append(p.links, pendingLink{
		line: p.line, path: path, target: string(target),
		parent: parent, name: name, placeholder: placeholder,
	})
	return nil
}

// resolveLinks replaces each hard-link placeholder by a link to its target's inode,
// following links to links. Targets are found first and replaced after, so that a link's
// target may itself be a placeholder. Each link is looked up once, so that a long chain
// of links to links costs no more than as many direct ones.
func (p *dumpParser) resolveLinks() error {
	targets := make([]*Node, len(p.links))
	seen := make([]int, len(p.links)) // i+1 once passed while resolving link i
	var chain []int
	for i := range p.links {
		chain = chain[:0]
		var t *Node
		for cur := i; t == nil; {
			if t = targets[cur]; t != nil {
				break
			}
			if seen[cur] == i+1 {
				return p.linkError(cur, errors.New("hardlink cycle"))
			}
			seen[cur] = i + 1
			chain = append(chain, cur)
			l := p.links[cur]
			n := lookupPath(p.root, l.target)
			switch {
			case n == nil:
				return p.linkError(cur, fmt.Errorf("hardlink target %q not found", l.target))
			case n == l.placeholder:
				return p.linkError(cur, errors.New("hardlink to itself"))
			}
			if j, isLink := p.placeholders[n]; isLink {
				cur = j
				continue
			}
			if n.IsDir() {
				return p.linkError(cur, fmt.Errorf("hardlink to directory %q", l.target))
			}
			t = n
		}
		for _, c := range chain {
			targets[c] = t
		}
	}
	for i, l := range p.links {
		l.parent.Remove(l.name)
		if err := l.parent.Add(l.name, NewHardlink(targets[i])); err != nil {
			return p.linkError(i, fmt.Errorf("linking %q: %w", l.name, err))
		}
	}
	return nil
}

func (p *dumpParser) linkError(i int, err error) error {
	return &DumpError{Line: p.links[i].line, Path: p.links[i].path, Err: err}
}

// lookupPath finds an entry by path from the root as mkcomposefs does for link targets:
// leading and repeated slashes are skipped, every component is a literal name.
func lookupPath(root *Node, path string) *Node {
	cur := root
	for path != "" {
		var comp string
		if comp, path = nextComponent(path); comp == "" {
			continue
		}
		if cur = cur.Lookup(comp); cur == nil {
			return nil
		}
	}
	return cur
}

// nextComponent splits the first slash-separated component off path, dropping the run of
// slashes after it.
func nextComponent(path string) (comp, rest string) {
	i := 0
	for i < len(path) && path[i] != '/' {
		i++
	}
	comp = path[:i]
	for i < len(path) && path[i] == '/' {
		i++
	}
	return comp, path[i:]
}
