// Package deploy manages the sysroot's deployments: the boot entries that list them, each
// deployment's state (its /etc and origin), the shared /var, the kernels on the boot
// partition, and the verbs over them (Deploy, Rollback, SetKargs, staging and
// FinalizeStaged on a running host, GC, Fsck, pinning) and the status document bootc
// prints.
//
// Sysroot (sysroot.go) explains the layout and the invariants: a deployment's id is its
// composefs image digest, the boot entries are the list of deployments in boot order,
// and every change is written beside the old state and switched to by one rename of the
// whole boot entry set, so a crash leaves the old or the new set (tests/crash_test.go
// kills every operation at each of its durable steps). On a running host a change is
// staged (stage.go) and finalized at shutdown, so /etc edits made after staging are kept.
//
// The rest of this comment is about the three-way merges that carry a host's /etc and
// /var from the image it booted to the next one.
//
// # /etc
//
// Three trees take part: pristine, the /etc inside the image the host booted (read from
// its composefs mount); current, the host's live /etc (state/deploy/<id>/etc); and new,
// the /etc inside the new image. DiffEtc compares current with pristine, as ostree's
// ostree_diff_dirs does: added, modified, removed. MergeEtc copies new into the new
// deployment's /etc and applies that diff over it, in ostree's order (deletions, then
// the rest, parents first): whatever the host added or modified wins whole, even where
// the new image changed the path too; what the host did not touch follows the new
// image; what it deleted stays deleted. Added directories keep their mode, owner and
// xattrs, intermediate parents included; symlinks are copied verbatim, dangling or
// absolute; FIFOs, sockets and devices are not configuration and are not made again
// (one warning names them all), though, as in ostree, they still count as the host's
// change at their path (the new image's file there is removed); a directory the new image dropped that holds local changes
// is made again with the host's attributes; /etc/.updated is removed so that
// ConditionNeedsUpdate=/etc units (sysusers, tmpfiles) run on first boot. Unlike ostree,
// and like bootc, a bare chmod or chown of a directory is carried.
//
// A host change and the new image conflict when the host changed (or added) a file or
// symlink where the new image has a directory, or has a directory it changed, or changed
// something in, where the new image has a file or symlink. MergeEtc finds every conflict
// before it writes anything and returns them all in a *MergeConflictError; the caller
// stages nothing. (ostree aborts on the first; bootc collects them like this.)
//
// # What counts as a change: security.selinux
//
// A path is modified when its type, bytes, symlink target, mode, owner or xattrs differ,
// with three xattrs left out of the comparison: security.selinux, security.ima and
// security.evm. They are still copied with every path that is carried. This sides with
// ostree (which ignores all xattrs) on labels and with bootc (which compares all) on
// everything else: ACLs (system.posix_acl_*), file capabilities (security.capability),
// user.* and trusted.* xattrs are set by an administrator on purpose and are carried.
//
// Why labels do not count. The live /etc is a copy made at deploy time of the image's
// etc/, so on the first boot its labels equal the pristine ones only if the image carries
// labels and the copy kept them; a container image usually carries none, and then the
// pristine tree shows whatever the composefs mount gives unlabelled files while the live
// copy gets labels from the policy at creation. After that, labels on the live /etc change
// without anyone changing a configuration: a restorecon -R /etc, an autorelabel (after a
// policy update, which the new image may bring), a tool that writes a file under a
// different context. If labels counted, each such relabel would turn every file it
// touched into a "local modification", and those files would then keep their old
// content forever, silently cutting them off from the image's defaults: the very failure
// this merge exists to prevent, triggered by a routine SELinux operation. The cost of
// ignoring them is ostree's: a label-only change (chcon without touching content, mode
// or owner) is not carried; the new image's file with its label wins. Durable label
// choices belong in the policy (semanage fcontext), which lives in /etc/selinux and is
// carried as content; and a file carried for any other reason keeps its label. IMA and
// EVM xattrs are written by the kernel itself (appraisal in fix mode, EVM HMACs) on the
// live filesystem and never on the read-only image, so counting them would mark every
// appraised file modified. The same rule applies to /var.
//
// # /var
//
// /var is shared by every deployment. bootc applies an image's /var only at install and
// ignores it afterwards (bootc issue 1170: users are surprised that a new image's
// /var/lib/foo never arrives); ociboot deliberately differs and merges it three ways
// with MergeVar, conservatively: a path the new image adds that the host lacks is added;
// a path the host left exactly as the old image shipped it, and that the new image
// changed, is updated; the host's own changes (including deletions) always win; and
// nothing is ever deleted: a path the new image no longer ships is reported in
// VarResult.Dropped and left alone, and a directory is never replaced by a file. Only the
// paths the images ship are looked at, never the whole of the host's /var.
//
// # Host paths
//
// Every tree is entered through the *os.Root (or directory) its caller opened; below it
// each name is looked up relative to its parent's descriptor without following it, or
// opened with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS). No symlink is ever followed,
// not even one that stays inside its root: an `evil -> /` or `evil -> ../..` in the
// host's /etc, or a symlink in the new image, is an entry to compare or copy, never a
// way in. What a symlink in the new /etc hides (a deletion below it) is not there.
package deploy
