#!/usr/bin/env bash
# The demo, the README's main job: two versions of a small bootable image built from
# files this script writes, served by a docker-registry it starts on 127.0.0.1; a
# directory sysroot (a root that is not running: every change takes effect at once)
# switched to v1, its /etc edited, upgraded to v2, rolled back, with `ociboot status`
# after each change. Each step says what it showed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin/ociboot
step() { printf '\n== %s\n' "$*"; }
say() { printf '   -> %s\n' "$*"; }
run() {
	printf '$ %s\n' "$*" | sed "s|$bin|ociboot|; s|$work/mkimage|mkimage|"
	"$@"
}

if [ "$(id -u)" -ne 0 ]; then
	cat <<'EOF'
make demo needs root, for two things:
  - deploying an image reads its kernel, /etc and kargs.d through a composefs mount
    (EROFS + overlayfs), which only root can make;
  - the loopback registry the images are served from is Debian's docker-registry,
    installed with apt-get when it is missing.
Run it as root: sudo make demo
EOF
	exit 0
fi

./hack/install-deps.sh docker-registry
registry_bin=$(command -v docker-registry) || {
	echo "demo: docker-registry is missing and could not be installed (apt-get install docker-registry)" >&2
	exit 1
}

work=$(mktemp -d /tmp/ociboot-demo.XXXXXX)
registry_pid=
cleanup() {
	if [ -n "$registry_pid" ]; then
		kill "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/mkimage" ./hack/demo/mkimage
# From here on every path is relative to the demo's directory.
cd "$work"
sys=sysroot src=src

step "Two versions of a small bootable image, from files written in $work/src"
# base/: what both versions share (the kernel, initramfs, /etc and /var defaults, and
# a hundred data files); v1/ and v2/: each version's own top layer.
kver=6.12.0-demo
mkdir -p "$src"/base/{usr/lib/modules/$kver,usr/bin,usr/share/demo,etc,var/lib/demo}
head -c 200000 /dev/urandom >"$src/base/usr/lib/modules/$kver/vmlinuz"
head -c 400000 /dev/urandom >"$src/base/usr/lib/modules/$kver/initramfs.img"
printf '#!/bin/sh\necho "hello from the demo OS"\n' >"$src/base/usr/bin/hello"
chmod 0755 "$src/base/usr/bin/hello"
for i in $(seq -w 1 100); do head -c 20000 /dev/urandom >"$src/base/usr/share/demo/data$i"; done
echo "image" >"$src/base/etc/hostname"
printf 'greeting=hello\n' >"$src/base/etc/demo.conf"
echo "seed" >"$src/base/var/lib/demo/seed"
for v in 1 2; do
	mkdir -p "$src/v$v"/{usr/lib/bootc/kargs.d,etc}
	printf 'ID=ocibootdemo\nNAME="ociboot demo OS"\nPRETTY_NAME="ociboot demo OS %s"\nVERSION_ID=%s\n' "$v" "$v" \
		>"$src/v$v/usr/lib/os-release"
done
echo 'kargs = ["console=ttyS0"]' >"$src/v1/usr/lib/bootc/kargs.d/10-demo.toml"
echo 'kargs = ["console=ttyS0", "quiet"]' >"$src/v2/usr/lib/bootc/kargs.d/10-demo.toml"
printf 'greeting=hello\ncolour=blue\n' >"$src/v2/etc/demo.conf"
echo "added in v2" >"$src/v2/etc/new-in-v2.conf"
printf '%s files in base/ (%s), %s in v1/, %s in v2/\n' \
	"$(find "$src/base" -type f | wc -l)" "$(du -sh "$src/base" | cut -f1)" \
	"$(find "$src/v1" -type f | wc -l)" "$(find "$src/v2" -type f | wc -l)"
say "the kernel and initramfs sit where bootc images have them: /usr/lib/modules/$kver/"
say "v2 changes /etc/demo.conf, adds /etc/new-in-v2.conf and the karg 'quiet'"

step "A registry on the loopback interface (Debian's docker-registry)"
port=
for _ in 1 2 3 4 5; do
	p=$((20000 + RANDOM % 40000))
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi # taken
	cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$p
  secret: ociboot-demo
EOF
	"$registry_bin" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
	registry_pid=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { port=$p; break; }
		kill -0 "$registry_pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -n "$port" ] && break
	kill "$registry_pid" 2>/dev/null || true
	wait "$registry_pid" 2>/dev/null || true
	registry_pid=
done
if [ -z "$port" ]; then
	echo "demo: docker-registry did not start:" >&2
	tail -20 "$work/registry.log" >&2
	exit 1
fi
addr=127.0.0.1:$port
image=$addr/demo/os:stable
echo "serving on $addr (plain HTTP), pid $registry_pid"

# fetched says what ociboot asked the registry for since the previous call, from the
# registry's access log: manifest requests, and blobs by name ($work/names: "DIGEST NAME").
log_seen=0
fetched() {
	sleep 0.2 # the registry logs a request just after answering it
	local new manifests names
	new=$(tail -n +$((log_seen + 1)) "$work/registry.log" | grep '"ociboot"$' || true)
	log_seen=$(wc -l <"$work/registry.log")
	manifests=$(grep -c '/manifests/' <<<"$new" || true)
	names=$({ grep -o 'blobs/sha256:[0-9a-f]*' <<<"$new" || true; } | cut -d/ -f2 | while read -r d; do
		awk -v d="$d" '$1 == d { $1 = ""; print substr($0, 2); exit }' "$work/names"
	done | paste -sd, | sed 's/,/, /g')
	say "it asked the registry for: $manifests manifest(s)${names:+; $names}"
}

# pushed records the names of what a push printed, for fetched.
pushed() {
	local v=$1
	awk -v v="v$v" '$1 == "config" { print $2, v "'"'"'s config" }
		$1 == "layer" { print $3, ($2 ~ /base$/ ? "the base layer" : v "'"'"'s top layer") }' "$work/push$v" >>"$work/names"
	log_seen=$(wc -l <"$work/registry.log")
}

step "Push v1 as demo/os:stable"
run "$work/mkimage" -version 1 "$image" src/base src/v1 | tee "$work/push1"
pushed 1

step "Switch a directory sysroot to it"
run "$bin" --sysroot "$sys" switch --tls-verify=false "$image" | tee "$work/out"
fetched
d1=$(awk '/Composefs:/ {print $2}' "$work/out")
say "deployment ${d1:0:12}... is the default: its files are in the content-addressed store, named by fs-verity digest"
printf '   %s objects in composefs/objects, one EROFS image in composefs/images, one boot entry:\n' \
	"$(find "$sys/composefs/objects" -type f | wc -l)"
for e in "$sys"/boot/loader/entries/*.conf; do printf '   %s\n' "$e"; sed 's/^/     /' "$e"; done
if grep -q "composefs=?" "$sys"/boot/loader/entries/*.conf; then
	say "composefs=?<digest>: this filesystem cannot enable fs-verity, so the boot will not require it"
fi

step "Edit /etc on the host"
printf '$ echo my-host > %s\n' "$sys/state/deploy/$d1/etc/hostname"
echo my-host >"$sys/state/deploy/$d1/etc/hostname"
say "state/deploy/<id>/etc is the deployment's writable /etc; the image's own /etc stays as shipped"

step "Push v2 to the same tag, and check for it"
run "$work/mkimage" -version 2 "$image" src/base src/v2 | tee "$work/push2"
pushed 2
say "the base layer has the same digest in both: the same files make the same layer"
run "$bin" --sysroot "$sys" upgrade --check --tls-verify=false
fetched
say "nothing deployed; the update is recorded, and status shows it as the booted deployment's cachedUpdate"

step "Upgrade to v2"
run "$bin" --sysroot "$sys" upgrade --tls-verify=false | tee "$work/out"
fetched
say "only v2's new layer was fetched: the store already had the base layer's files"
d2=$(awk '/Composefs:/ {print $2}' "$work/out")
etc2=$sys/state/deploy/$d2/etc
printf '   v2 /etc/hostname:        %s   (the host'"'"'s edit, kept by the three-way merge)\n' "$(cat "$etc2/hostname")"
printf '   v2 /etc/demo.conf:       %s   (v2'"'"'s new default: the host had not changed it)\n' "$(tr '\n' ' ' <"$etc2/demo.conf")"
printf '   v2 /etc/new-in-v2.conf:  %s\n' "$(cat "$etc2/new-in-v2.conf")"
printf '   v2 kernel command line:  %s   (v2'"'"'s kargs.d added quiet)\n' \
	"$(grep -h "^options.*$d2" "$sys"/boot/loader/entries/*.conf | cut -d' ' -f2- | sed "s/$d2/${d2:0:12}.../")"

step "Status"
run "$bin" --sysroot "$sys" status --format humanreadable
say "booted: v2 (on a root that is not running, the default entry counts as booted); rollback: v1"
say "Update*: the newest image of the tag in the store, when it is not the deployment's own (as bootc shows it)"

step "Upgrade again"
run "$bin" --sysroot "$sys" upgrade --tls-verify=false
fetched
say "the manifest digest is the image's identity: one request decides that nothing changed"

step "Roll back"
run "$bin" --sysroot "$sys" rollback
run "$bin" --sysroot "$sys" status --format humanreadable
say "booted: v1 again, with its own /etc (hostname $(cat "$sys/state/deploy/$d1/etc/hostname")); rollback: v2"
say "nothing was fetched or rebuilt; a second 'ociboot rollback', or 'ociboot upgrade', boots v2 again"

step "Done: the registry is stopped and $work removed"
