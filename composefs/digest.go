package composefs

import (
	"encoding/hex"
	"fmt"
)

// Digest is a sha256 fs-verity digest: the name of an object in the store, of an image,
// and what overlayfs checks at open time with verity=require.
type Digest [32]byte

// String is the lower-case hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ObjectPath is the object's path relative to a store: "ab/cdef..." (2 + 62 hex digits).
func (d Digest) ObjectPath() string {
	s := d.String()
	return s[:2] + "/" + s[2:]
}

// ParseDigest parses 64 hex digits (either case).
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("digest %q: want %d hex digits, have %d", s, 2*len(d), len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}
