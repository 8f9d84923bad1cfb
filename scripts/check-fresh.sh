#!/usr/bin/env bash
# `make check-fresh`: the README's install path from zero. Builds a minimal
# Debian root (mmdebstrap, the suite imagegen builds from, from the host's
# apt sources: the archive imagegen uses by default), with nothing in it but
# Debian's essential packages, apt, make and ca-certificates; bind-mounts the
# host's Rust toolchain read-only (~/.rustup, ~/.cargo/bin; the crate
# registry and target dir are fresh inside the root, so every crate is
# downloaded and compiled there); clones the checkout's HEAD into it; and in a
# chroot runs `make deps` and `make build` (a release build of every binary).
# Prints what `make deps` installed and how long each step took.
#
# Like the machines this was first tried on, the root starts with qemu-utils
# from bookworm-backports installed and no backports source left (the case
# scripts/apt-deps.sh repairs); CHECK_FRESH_QEMU_BACKPORTS=0 starts without.
# CHECK_FRESH_KEEP=1 keeps the root (in CHECK_FRESH_DIR, default
# target/check-fresh) for a look inside; it is deleted otherwise.
# Needs root. Slow (a cold release build of the workspace: ~20-30 min on 2
# cores), so it is not part of `make test`.
set -euo pipefail

suite=bookworm
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${CHECK_FRESH_DIR:-$repo/target/check-fresh}
root=$work/root
backports=${CHECK_FRESH_QEMU_BACKPORTS:-1}
keep=${CHECK_FRESH_KEEP:-0}
log=$work/log

die() { echo "check-fresh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot, apt in the root)"
[ -x "$HOME/.cargo/bin/cargo" ] && [ -d "$HOME/.rustup" ] \
	|| die "no Rust toolchain in ~/.cargo/bin and ~/.rustup to bind-mount (install it with rustup)"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
if findmnt -rn -o TARGET | grep -q "^$work/"; then die "something is still mounted under $work"; fi

# The host's apt sources, as imagegen reads them by default; files whose
# entries need a key other than Debian's (third-party repositories) are left
# out: the root has only Debian's keyring.
mirrors=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] || continue
	if grep -Eio 'signed-by[:=] *[^] ]+' "$f" | grep -v 'debian-archive' | grep -q .; then
		echo "check-fresh: leaving out $f (signed by a non-Debian key)"
		continue
	fi
	mirrors+=("$f")
done
[ ${#mirrors[@]} -gt 0 ] || die "no usable apt sources on the host"

cleanup() {
	# Mounts live in the private mount namespace below and are gone with it.
	if [ "$keep" = 1 ]; then echo "check-fresh: root kept in $root"; else rm -rf "$root"; fi
}
rm -rf "$work"
mkdir -p "$work"
trap cleanup EXIT
elapsed() { local s=$(($2 - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

commit=$(git -C "$repo" rev-parse --short HEAD)
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
	echo "check-fresh: note: uncommitted changes in $repo are not part of the check (it clones HEAD $commit)"
fi

t0=$(date +%s)
echo "check-fresh: mmdebstrap $suite (minbase + make, ca-certificates) from ${mirrors[*]}"
mmdebstrap --quiet --variant=minbase --include=make,ca-certificates "$suite" "$root" "${mirrors[@]}" \
	>"$log.mmdebstrap" 2>&1 || { tail -n 30 "$log.mmdebstrap"; die "mmdebstrap failed (log: $log.mmdebstrap)"; }
t1=$(date +%s)
echo "check-fresh: root ready in $(elapsed "$t0" "$t1") ($(du -sh "$root" | cut -f1))"

# A chroot has no init: keep package scripts from starting daemons (etcd,
# containerd, the registry) that would outlive the check.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
git clone -q "$repo" "$root/root/kubeboot"
# Networks that intercept TLS make the host trust a CA Debian's bundle lacks:
# those certificates (only those) are added to the root the way an admin adds
# a CA, or cargo could not download a crate.
awk -v dir="$root/usr/local/share/ca-certificates" '
	FNR == 1 { file++ }
	/BEGIN CERTIFICATE/ { c = "" }
	{ c = c $0 "\n" }
	/END CERTIFICATE/ {
		if (file == 1) seen[c] = 1
		else if (!(c in seen)) { n++; f = sprintf("%s/check-fresh-host-%03d.crt", dir, n); printf "%s", c > f; close(f) }
	}
	END { print n + 0 }' "$root/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt >"$work/extra-ca"
if [ "$(cat "$work/extra-ca")" != 0 ]; then
	echo "check-fresh: the host trusts $(cat "$work/extra-ca") CA certificate(s) Debian's bundle lacks: added to the root"
	chroot "$root" update-ca-certificates >"$log.ca" 2>&1 || { cat "$log.ca"; die "update-ca-certificates failed in the root"; }
fi
mkdir -p "$root/root/.cargo/bin" "$root/root/.rustup"

# Everything that runs inside the root: one private mount namespace, so the
# bind mounts vanish with it whatever happens.
inner=$(cat <<'EOF'
set -euo pipefail
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind -o ro "$HOME/.rustup" "$ROOT/root/.rustup"
mount --bind -o ro "$HOME/.cargo/bin" "$ROOT/root/.cargo/bin"
exec chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	CARGO_HOME=/root/.cargo RUSTUP_HOME=/root/.rustup RUSTUP_AUTO_INSTALL=0 \
	STEP="$STEP" BACKPORTS="$BACKPORTS" /bin/bash -c "$SCRIPT"
EOF
)
in_root() { # STEP SCRIPT
	STEP=$1 SCRIPT=$2 ROOT=$root BACKPORTS=$backports unshare --mount --propagation private bash -c "$inner"
}

if [ "$backports" = 1 ]; then
	echo "check-fresh: pre-installing qemu-utils from $suite-backports, then removing that source"
	# shellcheck disable=SC2016
	in_root backports '
		uri=$(grep -h -m1 -E "^(URIs:|deb) " /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
			| grep -v security | head -n1 | sed -E "s/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//")
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" \
			>/etc/apt/sources.list.d/backports.list
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils
		rm /etc/apt/sources.list.d/backports.list
		apt-get update -qq
		dpkg-query -W -f="\${Package} \${Version}\n" qemu-utils
	' >"$log.backports" 2>&1 || { tail -n 30 "$log.backports"; die "could not pre-install qemu-utils from backports (log: $log.backports)"; }
	echo "check-fresh: root starts with $(tail -n1 "$log.backports")"
fi
t2=$(date +%s)

list='dpkg-query -W -f="\${db:Status-Status} \${Package} \${Version}\n" | sed -n "s/^installed //p" | LC_ALL=C sort -k1,1'
in_root list "$list" >"$work/packages.before"
echo "check-fresh: make deps (in the root, as a new user would; log: $log.deps)"
in_root deps 'cd /root/kubeboot && make deps' >"$log.deps" 2>&1 \
	|| { tail -n 40 "$log.deps"; die "make deps failed after $(elapsed "$t2" "$(date +%s)") (log: $log.deps)"; }
t3=$(date +%s)
in_root list "$list" >"$work/packages.after"
installed=$(LC_ALL=C join -v2 "$work/packages.before" "$work/packages.after" | cut -d' ' -f1 | tr '\n' ' ')
changed=$(LC_ALL=C join "$work/packages.before" "$work/packages.after" | awk '$2 != $3 {print $1 " " $2 " -> " $3}')
echo "check-fresh: make deps took $(elapsed "$t2" "$t3"); $(wc -w <<<"$installed") packages installed:"
fold -s -w 100 <<<"$installed" | sed 's/^/  /'
[ -z "$changed" ] || { echo "check-fresh: packages changed version:"; sed 's/^/  /' <<<"$changed"; }
grep -h '^deps: ' "$log.deps" | sed 's/^/  /' || true

echo "check-fresh: make build (cargo build --release --workspace --bins; log: $log.build)"
in_root build 'cd /root/kubeboot && nice -n 5 make build' >"$log.build" 2>&1 \
	|| { tail -n 40 "$log.build"; die "make build failed after $(elapsed "$t3" "$(date +%s)") (log: $log.build)"; }
t4=$(date +%s)
crates=$(grep -c '^ *Downloaded ' "$log.build" || true)
compiled=$(grep -c '^ *Compiling ' "$log.build" || true)
echo "check-fresh: make build took $(elapsed "$t3" "$t4"): $crates crates downloaded, $compiled compiled; binaries:"
in_root bins 'cd /root/kubeboot/target/release && find . -maxdepth 1 -type f -perm -u+x -printf "%f %s\n" | sort' \
	| awk '{printf "  %-22s %6.1f MiB\n", $1, $2 / 1048576}'
echo "check-fresh: passed (commit $commit) in $(elapsed "$t0" "$t4"): root $(elapsed "$t0" "$t1"), make deps $(elapsed "$t2" "$t3"), make build $(elapsed "$t3" "$t4")"
