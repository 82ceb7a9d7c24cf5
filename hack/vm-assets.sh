#!/usr/bin/env bash
# Fetches what the VM test's guest is made of, from Debian trixie, into a cache directory
# ($OCIBOOT_VM_CACHE, default ~/.cache/ociboot-vm), and prints the directory:
#
#   kernel/           linux-image-cloud-amd64 unpacked (6.12: fs-verity, erofs, overlay
#                     data-only layers), its release in kernel/KVER
#   systemd-boot/     systemd-boot-efi unpacked (usr/lib/systemd/boot/efi/systemd-bootx64.efi)
#
# The packages come through a trixie source list kept apart from the machine's own
# (Dir::Etc::sourcelist, an empty sourceparts, private lists and cache directories), and
# are unpacked with dpkg-deb -x: nothing is installed on the host, and installing
# Debian's systemd-boot would upgrade the host's systemd. Runs as any user.
set -euo pipefail

cache=${OCIBOOT_VM_CACHE:-${HOME:-/root}/.cache/ociboot-vm}
mirror=${OCIBOOT_TRIXIE_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"
if [ -s "$cache/kernel/KVER" ] && [ -e "$cache/systemd-boot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ]; then
	echo "$cache"
	exit 0
fi

apt=$cache/apt
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$apt/sources.list"
aptopts=(
	-o "Dir::Etc::sourcelist=$apt/sources.list"
	-o "Dir::Etc::sourceparts=-"
	-o "Dir::State::Lists=$apt/lists"
	-o "Dir::Cache=$apt/cache"
	-o "Dir::Cache::archives=$apt/archives"
	-o "APT::Get::List-Cleanup=0"
	-o "Acquire::Languages=none"
	-o "APT::Sandbox::User=root"
)
mkdir -p "$apt/cache"
echo "vm-assets: fetching trixie's package lists" >&2
apt-get "${aptopts[@]}" -qq update >&2

# linux-image-cloud-amd64 is a metapackage; the kernel is the versioned package it depends on.
kpkg=$(apt-cache "${aptopts[@]}" depends linux-image-cloud-amd64 |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\(-unsigned\)\?\)$/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
	echo "vm-assets: cannot find the kernel package linux-image-cloud-amd64 depends on" >&2
	exit 1
fi
echo "vm-assets: downloading $kpkg and systemd-boot-efi" >&2
(cd "$apt/debs" && apt-get "${aptopts[@]}" -qq download "$kpkg" systemd-boot-efi >&2)

rm -rf "$cache/kernel.new" "$cache/systemd-boot.new"
dpkg-deb -x "$apt/debs/${kpkg}"_*.deb "$cache/kernel.new"
dpkg-deb -x "$apt/debs"/systemd-boot-efi_*.deb "$cache/systemd-boot.new"
kver=$(basename "$(ls -d "$cache"/kernel.new/usr/lib/modules/*/ | head -n1)")
[ -e "$cache/kernel.new/boot/vmlinuz-$kver" ] || { echo "vm-assets: $kpkg has no /boot/vmlinuz-$kver" >&2; exit 1; }
echo "$kver" >"$cache/kernel.new/KVER"
rm -rf "$cache/kernel" "$cache/systemd-boot"
mv "$cache/kernel.new" "$cache/kernel"
mv "$cache/systemd-boot.new" "$cache/systemd-boot"
rm -rf "$apt/debs"
echo "$cache"
