#!/usr/bin/env bash
# bench-pull: the end-to-end pull benchmark (`make bench-pull`, as root).
#
# A real OS image -- debootstrap --variant=minbase bookworm plus linux-image-amd64, in two
# gzip layers -- is pushed to a docker-registry on 127.0.0.1, then, in the same run and
# interleaved round by round, we measure wall time and peak RSS of:
#   (a) ociboot image pull into a fresh, empty sysroot          (cold)
#   (b) ociboot image pull again into the same sysroot          (warm: no blob may be fetched)
#   (c) skopeo copy docker://... oci:DIR                        (download only)
#   (d) (c) followed by umoci unpack of that copy               (what a user would script)
# Targets (reported, never fatal): cold ociboot <= half of (d); peak RSS < 300 MB.
#
# The rootfs and the OCI image take minutes to build, so they are kept in a cache:
# OCIBOOT_BENCH_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/ociboot-bench (~1.3 GB,
# plus ~2 GB for the duration of a run); remove it to rebuild.
# Other knobs: OCIBOOT_BIN (default bin/ociboot), BENCH_RUNS (default 3),
# OCIBOOT_BENCH_MIRROR (default: the bookworm mirror apt uses), OCIBOOT_BENCH_TRANSPORT
# (prefix of the reference given to ociboot, default "": a bare name, which `image pull`
# reads with its default --transport registry; "docker://" works too),
# OCIBOOT_BENCH_TIMEOUT (seconds one ociboot run may take, default 900),
# OCIBOOT_BENCH_KEEP=1 (keep the work directory with every command's output).
#
# Exit status: 2 when the ociboot binary is missing or we are not root, 1 when the
# benchmark itself cannot run (build, registry, skopeo, umoci); 0 otherwise, even when
# ociboot fails or misses a target -- that is reported in the table.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${OCIBOOT_BIN:-$PWD/bin/ociboot}
RUNS=${BENCH_RUNS:-3}
CACHE=${OCIBOOT_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ociboot-bench}
TRANSPORT=${OCIBOOT_BENCH_TRANSPORT-}
TIMEOUT=${OCIBOOT_BENCH_TIMEOUT:-900}
# Bump when the recipe of the rootfs or the image changes, so that caches rebuild.
RECIPE=bookworm-minbase+linux-image-amd64/v1
TAG=bench
RSS_TARGET_MB=300

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() { # die MESSAGE [STATUS]
	printf 'bench-pull: %s\n' "$1" >&2
	exit "${2:-1}"
}

# ---------------------------------------------------------------------------- setup

[ -x "$BIN" ] || die "no ociboot binary at $BIN (run 'make build', or set OCIBOOT_BIN)" 2
# debootstrap, chroot, umoci unpack with the image's owners and a fair comparison all need root.
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, umoci unpack)" 2

# install_deps installs, through apt-get, the Debian packages this script uses when missing.
install_deps() {
	local need=(
		debootstrap:debootstrap docker-registry:docker-registry skopeo:skopeo umoci:umoci
		pigz:pigz jq:jq curl:curl /usr/bin/time:time
	)
	local pair missing=()
	for pair in "${need[@]}"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Colleagues' scripts may hold the dpkg lock; wait for it instead of failing.
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# debian_mirror prints the bookworm mirror apt uses (deb822 .sources or one-line .list);
# only the configured mirrors are reachable from here.
debian_mirror() {
	if [ -n "${OCIBOOT_BENCH_MIRROR:-}" ]; then
		say "$OCIBOOT_BENCH_MIRROR"
		return
	fi
	local f uri
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do
		[ -f "$f" ] || continue
		case $f in
		*.sources)
			uri=$(awk 'BEGIN { RS = "" }
				{
					deb = 0; bookworm = 0; enabled = 1; uri = ""
					n = split($0, line, "\n")
					for (i = 1; i <= n; i++) {
						if (line[i] ~ /^#/) continue
						split(line[i], w, /[ \t]+/)
						if (w[1] == "Types:") for (j = 2; j in w; j++) if (w[j] == "deb") deb = 1
						if (w[1] == "Suites:") for (j = 2; j in w; j++) if (w[j] == "bookworm") bookworm = 1
						if (w[1] == "Enabled:" && w[2] == "no") enabled = 0
						if (w[1] == "URIs:") uri = w[2]
					}
					if (deb && bookworm && enabled && uri != "") { print uri; exit }
				}' "$f")
			;;
		*.list)
			uri=$(awk '$1 == "deb" {
					i = 2
					if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
					if ($(i + 1) == "bookworm") { print $i; exit }
				}' "$f")
			;;
		*) uri= ;;
		esac
		if [ -n "$uri" ]; then
			say "$uri"
			return
		fi
	done
	say http://deb.debian.org/debian
}

# unmount_under unmounts whatever is mounted at or below $1 (deepest first): debootstrap
# mounts proc and sys in its target and may leave them when it fails, and deleting a tree
# with the host's /proc or /sys mounted inside would be destructive.
unmount_under() {
	local dir
	dir=$(realpath -m "$1")
	findmnt -rn -o TARGET | awk -v d="$dir" '$0 == d || index($0, d "/") == 1' | sort -r |
		while read -r m; do umount -l "$(printf '%b' "$m")"; done
}

WORK=
REG_PID=
cleanup() {
	local rc=$?
	if [ -n "$REG_PID" ]; then
		kill "$REG_PID" 2>/dev/null || true
		wait "$REG_PID" 2>/dev/null || true
	fi
	[ -d "$CACHE/rootfs.tmp" ] && unmount_under "$CACHE/rootfs.tmp"
	if [ -n "$WORK" ]; then
		if [ "${OCIBOOT_BENCH_KEEP:-0}" = 1 ]; then
			say "work directory kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_deps
mkdir -p "$CACHE"
CACHE=$(realpath "$CACHE")
# One run at a time per cache: two would build into, and measure against, the same files.
exec 9>"$CACHE/lock"
flock -n 9 || die "another bench-pull holds $CACHE/lock"
# The work directory holds up to one sysroot, one oci: copy and one unpacked bundle at a time;
# it is on disk (not tmpfs) beside the cache so every tool writes to the same filesystem.
WORK=$(mktemp -d "$CACHE/work.XXXXXX")

# ---------------------------------------------------------------------------- the rootfs

# build_rootfs makes $CACHE/rootfs: debootstrap minbase bookworm, then linux-image-amd64
# installed by apt in a chroot (so the kernel's postinst runs and writes the initramfs, as
# on a real system), with the kernel and initramfs also at /usr/lib/modules/$KVER/ where
# bootc-style images carry them.
build_rootfs() {
	local root=$CACHE/rootfs tmp=$CACHE/rootfs.tmp start mirror kver
	if [ "$(cat "$CACHE/rootfs.done" 2>/dev/null)" = "$RECIPE" ]; then
		say "rootfs: from the cache ($root, built $(date -r "$CACHE/rootfs.done" '+%F %T'); remove it to rebuild)"
		return
	fi
	start=$(date +%s)
	mirror=$(debian_mirror)
	say "rootfs: building (minutes; kept in $root): debootstrap --variant=minbase bookworm from $mirror"
	rm -f "$CACHE/rootfs.done" "$CACHE/image.done"
	unmount_under "$tmp"
	rm -rf "$tmp" "$root"
	debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$CACHE/build.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/build.log"

	say "rootfs: apt-get install linux-image-amd64 in a chroot"
	mount -t proc proc "$tmp/proc"
	if ! chroot "$tmp" env DEBIAN_FRONTEND=noninteractive sh -c \
		'apt-get update -q && apt-get install -y -q --no-install-recommends linux-image-amd64 && apt-get clean' \
		>>"$CACHE/build.log" 2>&1; then
		unmount_under "$tmp"
		die "installing linux-image-amd64 failed; see $CACHE/build.log"
	fi
	unmount_under "$tmp"

	kver=$(ls "$tmp/usr/lib/modules")
	if [ ! -f "$tmp/boot/vmlinuz-$kver" ] || [ ! -f "$tmp/boot/initrd.img-$kver" ]; then
		die "no kernel or initramfs for '$kver' in $tmp/boot; see $CACHE/build.log"
	fi
	cp -a "$tmp/boot/vmlinuz-$kver" "$tmp/usr/lib/modules/$kver/vmlinuz"
	cp -a "$tmp/boot/initrd.img-$kver" "$tmp/usr/lib/modules/$kver/initramfs.img"

	mv "$tmp" "$root"
	echo "$RECIPE" >"$CACHE/rootfs.done"
	say "rootfs: built in $(($(date +%s) - start)) s (kernel $kver)"
}

# ---------------------------------------------------------------------------- the OCI image

# tar_layer writes a gzip layer of the rootfs to $1, from the paths (relative to the rootfs)
# and tar options that follow. pax format with xattrs and numeric owners, sorted, without
# atime/ctime records: the same tree gives the same layer.
tar_layer() {
	local out=$1
	shift
	tar -C "$CACHE/rootfs" --create --format=pax --pax-option=delete=atime,delete=ctime \
		--numeric-owner --xattrs --xattrs-include='*' --sort=name "$@" | pigz -n -6 >"$out"
}

# put_blob moves file $1 into the layout's blob store and prints its digest.
put_blob() {
	local hex
	hex=$(sha256sum "$1" | cut -d' ' -f1)
	mv "$1" "$LAYOUT_TMP/blobs/sha256/$hex"
	say "sha256:$hex"
}

# build_image makes $CACHE/image, an OCI image layout with one image tagged "bench":
# layer 1 = the rootfs without /boot and /usr/lib/modules (minbase and what apt changed
# around the kernel), layer 2 = /boot and /usr/lib/modules (the kernel: modules, vmlinuz,
# initramfs). Built with tar, pigz and jq: nothing here depends on the code under test.
build_image() {
	local start top l1 l2 i size usize cfg man created=2025-05-20T00:00:00Z
	if [ "$(cat "$CACHE/image.done" 2>/dev/null)" = "$RECIPE" ]; then
		say "image: from the cache ($CACHE/image)"
		return
	fi
	start=$(date +%s)
	say "image: building two gzip layers (kept in $CACHE/image)"
	LAYOUT_TMP=$CACHE/image.tmp
	rm -rf "$LAYOUT_TMP" "$CACHE/image"
	mkdir -p "$LAYOUT_TMP/blobs/sha256"
	mapfile -t top < <(find "$CACHE/rootfs" -mindepth 1 -maxdepth 1 ! -name boot -printf '%P\n' | LC_ALL=C sort)
	l1=$LAYOUT_TMP/layer1.tar.gz l2=$LAYOUT_TMP/layer2.tar.gz
	tar_layer "$l1" --anchored --exclude=usr/lib/modules -- "${top[@]}"
	tar_layer "$l2" -- boot usr/lib/modules

	: >"$LAYOUT_TMP/sizes"
	local descs=() diffids=()
	for i in 1 2; do
		local f=$LAYOUT_TMP/layer$i.tar.gz
		size=$(stat -c %s "$f")
		usize=$(pigz -dc "$f" | wc -c)
		diffids+=("sha256:$(pigz -dc "$f" | sha256sum | cut -d' ' -f1)")
		descs+=("$(jq -nc --arg d "$(put_blob "$f")" --argjson s "$size" \
			'{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}')")
		printf 'layer%s_gz=%s\nlayer%s_tar=%s\n' "$i" "$size" "$i" "$usize" >>"$LAYOUT_TMP/sizes"
	done
	printf 'unpacked=%s\nentries=%s\n' \
		"$(du -sx --apparent-size --block-size=1 "$CACHE/rootfs" | cut -f1)" \
		"$(find "$CACHE/rootfs" -xdev | wc -l)" >>"$LAYOUT_TMP/sizes"

	jq -nc --arg c "$created" --arg d1 "${diffids[0]}" --arg d2 "${diffids[1]}" '{
		created: $c, architecture: "amd64", os: "linux",
		config: {
			Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
			Cmd: ["/bin/bash"], Labels: {"containers.bootc": "1"}
		},
		rootfs: {type: "layers", diff_ids: [$d1, $d2]},
		history: [
			{created: $c, created_by: "debootstrap --variant=minbase bookworm; apt-get install linux-image-amd64 (all but /boot, /usr/lib/modules)"},
			{created: $c, created_by: "linux-image-amd64: /boot, /usr/lib/modules"}
		]}' >"$LAYOUT_TMP/config.json"
	size=$(stat -c %s "$LAYOUT_TMP/config.json")
	cfg=$(jq -nc --arg d "$(put_blob "$LAYOUT_TMP/config.json")" --argjson s "$size" \
		'{mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s}')
	jq -nc --argjson cfg "$cfg" --argjson l1 "${descs[0]}" --argjson l2 "${descs[1]}" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: $cfg, layers: [$l1, $l2]}' >"$LAYOUT_TMP/manifest.json"
	size=$(stat -c %s "$LAYOUT_TMP/manifest.json")
	man=$(put_blob "$LAYOUT_TMP/manifest.json")
	jq -nc --arg d "$man" --argjson s "$size" --arg t "$TAG" '{schemaVersion: 2, manifests: [{
		mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
		annotations: {"org.opencontainers.image.ref.name": $t}}]}' >"$LAYOUT_TMP/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT_TMP/oci-layout"
	echo "$man" >"$LAYOUT_TMP/manifest-digest"

	mv "$LAYOUT_TMP" "$CACHE/image"
	echo "$RECIPE" >"$CACHE/image.done"
	say "image: built in $(($(date +%s) - start)) s"
}

# ---------------------------------------------------------------------------- the registry

# start_registry runs docker-registry on 127.0.0.1:<free port> with our own config (the
# packaged one listens on every address), storage in the cache so the push is done once,
# and its access log in $WORK/registry.log, where the blob GETs are counted.
start_registry() {
	local port i
	for i in $(seq 200); do
		port=$((20000 + RANDOM % 40000))
		ss -Hltn "sport = :$port" | grep -q . || break
	done
	cat >"$WORK/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		  accesslog:
		    disabled: false
		storage:
		  filesystem:
		    rootdirectory: $CACHE/registry
		  delete:
		    enabled: true
		http:
		  addr: 127.0.0.1:$port
		  secret: bench-$RANDOM$RANDOM
	EOF
	docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
	REG_PID=$!
	ADDR=127.0.0.1:$port
	for i in $(seq 100); do
		curl -fsS -o /dev/null "http://$ADDR/v2/" 2>/dev/null && return
		kill -0 "$REG_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/registry.log" >&2
	die "docker-registry did not come up on $ADDR"
}

# blob_gets prints how many blob GETs the registry's access log has after line $1.
blob_gets() {
	tail -n +"$(($1 + 1))" "$WORK/registry.log" | grep -c '"GET /v2/[^ ]*/blobs/sha256:' || true
}
log_lines() { wc -l <"$WORK/registry.log"; }

# ---------------------------------------------------------------------------- measuring

# timed NAME CMD...: runs CMD under GNU time, stdout and stderr to $WORK/NAME.{out,err};
# sets RC, WALL (s) and RSS (KB, the peak resident set of the largest process).
timed() {
	local name=$1
	shift
	set +e
	/usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
	RC=$?
	set -e
	read -r WALL RSS < <(tail -n 1 "$WORK/$name.time")
}

# settle flushes what earlier runs wrote or deleted, so that its writeback does not land
# in the next measurement.
settle() { sync; }

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | grep . | sort -g | tail -n 1; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
human() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

# pull NAME: one timed ociboot image pull into $sysroot; sets RC, WALL, RSS and, when it
# succeeded, DIGEST (the composefs image it printed); otherwise OCIBOOT_NA says why not.
pull() {
	timed "$1" timeout "$TIMEOUT" "$BIN" --sysroot "$sysroot" image pull --tls-verify=false --quiet "$TRANSPORT$REF"
	DIGEST=$(awk '$1 == "composefs" { print $2 }' "$WORK/$1.out")
	if [ "$RC" -eq 0 ] && [ -z "$DIGEST" ]; then
		OCIBOOT_NA="ociboot image pull printed no 'composefs <digest>' line"
		RC=1
	elif [ "$RC" -ne 0 ]; then
		OCIBOOT_NA=$(why_failed "$1")
	fi
}

# why_failed names the reason an ociboot run failed, from its stderr.
why_failed() {
	if [ "$RC" -eq 124 ]; then
		say "ociboot image pull timed out after $TIMEOUT s"
	elif grep -qiE 'unknown command|not implemented' "$WORK/$1.err"; then
		say "ociboot image pull not implemented"
	else
		say "ociboot image pull failed (exit $RC): $(grep . "$WORK/$1.err" | tail -n 1 | cut -c1-160)"
	fi
}

# ---------------------------------------------------------------------------- main

step "Building (cached in $CACHE)"
build_rootfs
build_image
# size KEY: a size recorded when the image was built (bytes, or a count of entries).
size() { awk -F= -v k="$1" '$1 == k { print $2 }' "$CACHE/image/sizes"; }
MANIFEST=$(cat "$CACHE/image/manifest-digest")

step "Pushing to a loopback docker-registry"
start_registry
REF=$ADDR/os:$TAG
skopeo copy --quiet --dest-tls-verify=false --preserve-digests \
	"oci:$CACHE/image:$TAG" "docker://$REF" >"$WORK/push.log" 2>&1 ||
	{ cat "$WORK/push.log" >&2; die "skopeo copy to the registry failed"; }
pushed=$(skopeo inspect --raw --tls-verify=false "docker://$REF" | sha256sum | cut -d' ' -f1)
[ "sha256:$pushed" = "$MANIFEST" ] || die "the registry serves manifest sha256:$pushed, not $MANIFEST"
say "docker://$REF  manifest $MANIFEST (registry on $ADDR, pid $REG_PID)"
# Every run is served from the page cache: read the registry's blobs once now. The page
# cache is not dropped between runs (that cannot be made fair to the tools alike), and each
# run starts after a sync of what the previous ones wrote.
cat "$CACHE"/registry/docker/registry/v2/blobs/sha256/*/*/data >/dev/null

step "Measuring: $RUNS rounds of (a) ociboot cold, (b) ociboot warm, (c) skopeo copy, (d) umoci unpack of (c)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
cold_t='' cold_m='' warm_t='' warm_m='' sk_t='' sk_m='' su_t='' su_m=''
cold_gets='' warm_gets='' digests='' manifests='' missing_images=''
OCIBOOT_NA=''
for i in $(seq "$RUNS"); do
	sysroot=$WORK/sysroot
	if [ -z "$OCIBOOT_NA" ]; then
		rm -rf "$sysroot" && mkdir "$sysroot" && settle
		mark=$(log_lines)
		pull "cold$i"
		if [ "$RC" -eq 0 ]; then
			cold_t+=" $WALL" cold_m+=" $RSS" cold_gets+=" $(blob_gets "$mark")" digests+=" $DIGEST"
			manifests+=" $(awk '$1 == "manifest" { print $2 }' "$WORK/cold$i.out")"
			[ -f "$sysroot/composefs/images/$DIGEST" ] ||
				missing_images+=" $DIGEST"
			settle
			mark=$(log_lines)
			pull "warm$i"
			if [ "$RC" -eq 0 ]; then
				warm_t+=" $WALL" warm_m+=" $RSS" warm_gets+=" $(blob_gets "$mark")" digests+=" $DIGEST"
			fi
		fi
		rm -rf "$sysroot"
	fi

	rm -rf "$WORK/oci" "$WORK/bundle" && settle
	timed "skopeo$i" skopeo copy --src-tls-verify=false "docker://$REF" "oci:$WORK/oci:$TAG"
	[ "$RC" -eq 0 ] || { cat "$WORK/skopeo$i.err" >&2; die "skopeo copy failed"; }
	sk_t+=" $WALL" sk_m+=" $RSS"
	copy_t=$WALL copy_m=$RSS
	settle
	timed "umoci$i" umoci unpack --image "$WORK/oci:$TAG" "$WORK/bundle"
	[ "$RC" -eq 0 ] || { cat "$WORK/umoci$i.err" >&2; die "umoci unpack failed"; }
	su_t+=" $(awk -v a="$copy_t" -v b="$WALL" 'BEGIN { printf "%.2f", a + b }')"
	su_m+=" $(maxof <<<"$copy_m $RSS")"
	rm -rf "$WORK/oci" "$WORK/bundle"
	say "round $i/$RUNS done"
done

# ---------------------------------------------------------------------------- report

step "Image"
say "docker://$REF  $MANIFEST  (OCI layout: $CACHE/image)"
say "layer 1 (minbase + apt state, no kernel): $(human "$(size layer1_gz)") gzip, $(human "$(size layer1_tar)") tar"
say "layer 2 (/boot, /usr/lib/modules):        $(human "$(size layer2_gz)") gzip, $(human "$(size layer2_tar)") tar"
say "compressed total $(human $(($(size layer1_gz) + $(size layer2_gz)))); unpacked $(human "$(size unpacked)") in $(size entries) entries (du --apparent-size)"

# row WHAT TIMES RSSES [NOTE]: one line of the table; TIMES empty means not available.
row() {
	if [ -z "$2" ]; then
		printf '%-27s not available: %s\n' "$1" "$OCIBOOT_NA"
		return
	fi
	printf '%-27s %-16s %-20s %-11s %s\n' "$1" "$(median <<<"$2")" "${2# }" "$(mb "$(maxof <<<"$3")")" "${4:-}"
}

step "Results ($RUNS runs each; wall s is the median, peak RSS the largest of the runs)"
printf '%-27s %-16s %-20s %-11s\n' what 'wall s (median)' runs 'peak RSS MB'
row 'ociboot pull (cold)' "$cold_t" "$cold_m" "${cold_t:+blobs fetched:$cold_gets}"
row 'ociboot pull (warm)' "$warm_t" "$warm_m" "${warm_t:+blobs fetched:$warm_gets}"
row 'skopeo copy (download)' "$sk_t" "$sk_m"
row 'skopeo copy + umoci unpack' "$su_t" "$su_m"

if [ -n "$cold_t" ]; then
	ratio=$(awk -v a="$(median <<<"$cold_t")" -v b="$(median <<<"$su_t")" 'BEGIN { printf "%.2f", a / b }')
	ratio_ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 0.5) ? "ok" : "FAIL" }')
	peak=$(mb "$(maxof <<<"$cold_m $warm_m")")
	rss_ok=$([ "$peak" -lt "$RSS_TARGET_MB" ] && echo ok || echo FAIL)
	printf 'ratio ociboot cold / (skopeo+umoci): %s (target <= 0.5: %s)   peak RSS %s MB, target < %s MB: %s\n' \
		"$ratio" "$ratio_ok" "$peak" "$RSS_TARGET_MB" "$rss_ok"
	nonzero=$(tr ' ' '\n' <<<"$warm_gets" | grep -cv '^0*$' || true)
	[ "$nonzero" -eq 0 ] || say "FAIL: a warm pull fetched blobs (blobs fetched:$warm_gets)"
	ndig=$(tr ' ' '\n' <<<"$digests" | grep . | sort -u | wc -l)
	say "composefs image: $(tr ' ' '\n' <<<"$digests" | grep . | head -n 1) ($([ "$ndig" -eq 1 ] && echo "the same in every run" || echo "FAIL: $ndig different digests"))"
	[ -z "$missing_images" ] ||
		say "FAIL: no composefs/images/<digest> in the sysroot after the pull:$missing_images"
	if tr ' ' '\n' <<<"$manifests" | grep . | grep -qvx "$MANIFEST"; then
		say "FAIL: ociboot reported manifest(s)$manifests, the registry serves $MANIFEST"
	fi
else
	say "ratio ociboot cold / (skopeo+umoci): n/a   peak RSS target < $RSS_TARGET_MB MB: n/a (ociboot pull not available)"
fi
if awk -v l="${LOAD_BEFORE%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
	say "WARNING: the machine was busy (load average $LOAD_BEFORE on $(nproc) CPUs): the times are noisy; rerun on a quiet machine"
fi
say "notes: load average before/after the runs: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs;"
say "       page cache not dropped (registry blobs are read before the runs); sync between runs, untimed;"
say "       (d) is the same round's (c) plus umoci unpack of it; RSS is per process, MB = 2^20 bytes."
