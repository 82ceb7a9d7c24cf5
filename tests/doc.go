// Package tests holds ociboot's end-to-end tests: they build the real binary and drive
// it against real mounts, registries and, later, a virtual machine. Tests that need root
// or a Debian tool skip with the reason outside CI and fail in it (CI=true).
package tests
