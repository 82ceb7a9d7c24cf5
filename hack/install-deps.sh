#!/usr/bin/env bash
# Installs the Debian packages ociboot's tests and demo use, when they are missing.
# As root it uses apt-get; otherwise it says what is missing and the tests that need
# it skip (outside CI) with that reason.
set -euo pipefail

# command:package pairs.
need=(
	mkfs.erofs:erofs-utils
	fsck.erofs:erofs-utils
	debootstrap:debootstrap
	fsverity:fsverity
)

missing=()
for pair in "${need[@]}"; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
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
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
