// Package oci pulls OS images from any OCI transport into the composefs store.
//
// Data flow (see ../shared/DESIGN.md, steps 1-3): resolve the reference and check
// policy.json; fetch the manifest (the manifest digest is the image's identity, never the
// tag) and config; stream every layer, fetched concurrently and decompressed once, into
// IngestLayer, which writes each regular file's bytes to the object store under their
// fs-verity digest and records everything else as a Layer of entries. Nothing from a tar
// header ever becomes a host path. ApplyLayers then applies the layers in order, with
// OCI whiteouts and opaque directories, into one composefs tree, and the caller writes
// that tree as an EROFS image.
//
// Layers are kept by diffID, so an upgrade fetches only the layers it lacks.
//
// The package never logs on its own account: it takes a logrus.FieldLogger and a
// progress sink.
package oci
