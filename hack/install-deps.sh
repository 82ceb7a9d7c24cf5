#!/usr/bin/env bash
# Installs the Debian packages ociboot's tests and demo use, when they are missing.
# As root it uses apt-get; otherwise it says what is missing and the tests that need
# it skip (outside CI) with that reason. With arguments, only the packages of those
# commands (`install-deps.sh docker-registry`, as the demo does).
set -euo pipefail

# command:package pairs.
need=(
	mkfs.erofs:erofs-utils
	fsck.erofs:erofs-utils
	debootstrap:debootstrap
	fsverity:fsverity
	# The pull tests: a registry on the loopback interface, and the independent tools
	# whose trees ociboot's are compared with. buildah builds with --isolation chroot,
	# which needs no OCI runtime (crun, runc) and, as root with the overlay driver, no
	# fuse-overlayfs: its recommends are not installed.
	docker-registry:docker-registry
	skopeo:skopeo
	umoci:umoci
	buildah:buildah
	busybox:busybox-static
	# Boot partitions: the boot entry set is crash-tested on loop-mounted ext4 and xfs.
	mkfs.xfs:xfsprogs
	# install to-disk --filesystem btrfs.
	mkfs.btrfs:btrfs-progs
	mkfs.vfat:dosfstools
	# install to-disk: the GPT (sfdisk), the ESP filled without mounting it (mtools).
	sfdisk:fdisk
	mcopy:mtools
	# The systemd units are checked with systemd-analyze verify, the dracut module with
	# shellcheck.
	systemd-analyze:systemd
	shellcheck:shellcheck
	# The VM test (make e2e): qemu under TCG with OVMF; debugfs reads the results back
	# from the guest's control disk without mounting it; the guest's kernel and
	# systemd-boot come from trixie through hack/vm-assets.sh, which needs dpkg-deb.
	qemu-system-x86_64:qemu-system-x86
	debugfs:e2fsprogs
	dpkg-deb:dpkg
)

# file:package pairs. The build uses CGO_ENABLED=0 and the containers_image_openpgp tag;
# a plain `go vet ./...` (cgo on, no tags) compiles containers/image's gpgme and
# containers/storage's btrfs code, which need these headers.
need_files=(
	/usr/include/gpgme.h:libgpgme-dev
	/usr/include/btrfs/ioctl.h:libbtrfs-dev
	/usr/share/OVMF/OVMF_CODE_4M.fd:ovmf
)

if [ $# -gt 0 ]; then
	only=()
	for pair in "${need[@]}"; do
		for cmd in "$@"; do
			[ "${pair%%:*}" = "$cmd" ] && only+=("$pair")
		done
	done
	need=("${only[@]}") need_files=()
fi

missing=()
for pair in "${need[@]}"; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
for pair in "${need_files[@]}"; do
	file=${pair%%:*} pkg=${pair#*:}
	[ -e "$file" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: not root; missing Debian packages: ${missing[*]} (tests that need them will skip)" >&2
	exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# docker-registry's package starts a registry on every interface: the tests start their
# own, so keep services from starting while installing, unless a policy already says.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
