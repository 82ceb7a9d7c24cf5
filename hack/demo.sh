#!/usr/bin/env bash
# The composefs demo (until `ociboot switch` exists): make a tree, write its composefs
# image with the file contents in an object store, show what the image holds, mount it
# read-only over the store and check that the mount shows exactly the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin/ociboot
work=$(mktemp -d /tmp/ociboot-demo.XXXXXX)
mnt=$work/mnt
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && "$bin" composefs unmount "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "A small root filesystem tree in $work/rootfs"
src=$work/rootfs
mkdir -p "$src"/{etc,usr/bin,usr/lib/os,var/log}
echo "demo-host" >"$src/etc/hostname"
printf 'NAME="ociboot demo"\nVERSION_ID=1\n' >"$src/usr/lib/os/os-release"
ln -s ../usr/lib/os/os-release "$src/etc/os-release"
head -c 300000 /dev/urandom >"$src/usr/bin/tool"
chmod 0755 "$src/usr/bin/tool"
cp "$src/usr/bin/tool" "$src/usr/bin/tool-copy" # same content: stored once
for i in $(seq 1 50); do echo "log line $i" >"$src/var/log/$i.log"; done
find "$src" | wc -l | xargs printf '%s entries\n'

step "ociboot composefs mkimage --digest-store (file contents go into the object store)"
"$bin" composefs mkimage --print-digest --digest-store "$work/objects" "$src" "$work/image.cfs" | tee "$work/digest"
printf 'image: %s bytes; fs-verity digest above (the deployment id)\n' "$(stat -c %s "$work/image.cfs")"
printf 'objects in the store: %s (tool and tool-copy share one)\n' "$(find "$work/objects" -type f | wc -l)"

step "The same tree gives the same image, byte for byte"
"$bin" composefs mkimage --print-digest-only "$src" | diff - "$work/digest" && echo "same digest again"

step "ociboot composefs info ls (first lines)"
"$bin" composefs info ls "$work/image.cfs" | head -8

step "ociboot composefs info dump (first lines)"
"$bin" composefs info dump "$work/image.cfs" | head -4 | cut -c1-150

if [ "$(id -u)" -ne 0 ]; then
	step "Mounting needs root: run 'sudo make demo' to see the mount"
	exit 0
fi

step "ociboot composefs mount: erofs + overlay over the object store, read-only"
mkdir -p "$mnt"
"$bin" composefs mount --basedir "$work/objects" "$work/image.cfs" "$mnt"
findmnt -n -o FSTYPE,OPTIONS "$mnt" | cut -c1-160
ls -l "$mnt" "$mnt/usr/bin"
cat "$mnt/etc/os-release"
if diff -r --no-dereference "$src" "$mnt" >/dev/null && cmp -s "$src/usr/bin/tool" "$mnt/usr/bin/tool"; then
	echo "the mount shows exactly the source tree"
else
	echo "the mount differs from the source tree" >&2
	exit 1
fi
if touch "$mnt/etc/new" 2>/dev/null; then
	echo "the mount is writable: it should not be" >&2
	exit 1
fi
echo "writing to it fails: it is read-only"
"$bin" composefs unmount "$mnt"
echo "unmounted"
