//go:build !linux

package composefs

import "os"

// EnableVerity reports ErrVerityNotSupported: fs-verity is a Linux feature.
func EnableVerity(f *os.File, alg HashAlgorithm) error {
	return &VerityError{Op: "enable", Path: f.Name(), Err: ErrVerityNotSupported}
}

// MeasureVerity reports ErrVerityNotSupported: fs-verity is a Linux feature.
func MeasureVerity(f *os.File) (HashAlgorithm, []byte, error) {
	return 0, nil, &VerityError{Op: "measure", Path: f.Name(), Err: ErrVerityNotSupported}
}
