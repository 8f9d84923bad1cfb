#!/usr/bin/env bash
# kubeboot local cluster under QEMU (TCG): `up`, `status`, `down`.
#
# For now (before the end-to-end issue) `up` boots ONE master from
# $OUT/master with a persistent qcow2 data disk, follows its console until
# systemd reaches multi-user.target, and leaves it running in the
# background. Non-interactive: no stdin is read, so it runs in CI.
#
# State lives in $RUN_DIR (default run/cluster): the data disk, QEMU's pid
# file and the console log. `down` stops QEMU and keeps the disk; `down
# --purge` (PURGE=1) deletes it too.
set -euo pipefail

OUT=${OUT:-out}
RUN_DIR=${RUN_DIR:-run/cluster}
NODE=master-1
BOOT_TIMEOUT=${BOOT_TIMEOUT:-600}
DISK_SIZE=${DISK_SIZE:-8G}
MEMORY=${MEMORY:-1536}

disk=$RUN_DIR/$NODE.qcow2
pidfile=$RUN_DIR/$NODE.pid
console=$RUN_DIR/$NODE.console.log

need() {
    command -v "$1" >/dev/null || { echo "cluster: $1 not found: install the Debian package $2 (make deps)" >&2; exit 1; }
}

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

up() {
    need qemu-system-x86_64 qemu-system-x86
    need qemu-img qemu-utils
    for f in vmlinuz initramfs.img manifest.json; do
        [ -f "$OUT/master/$f" ] || { echo "cluster: $OUT/master/$f is missing: run \`make image\`" >&2; exit 1; }
    done
    if running; then
        echo "cluster: $NODE is already running (pid $(cat "$pidfile")); \`make cluster-down\` stops it"
        return 0
    fi
    mkdir -p "$RUN_DIR"
    [ -f "$disk" ] || qemu-img create -q -f qcow2 "$disk" "$DISK_SIZE"
    cmdline=$(sed -n 's/^ *"cmdline": *"\(.*\)",*$/\1/p' "$OUT/master/manifest.json")
    : > "$console"
    qemu-system-x86_64 -machine q35 -accel tcg -m "$MEMORY" -smp 2 \
        -nodefaults -no-user-config -display none \
        -kernel "$OUT/master/vmlinuz" -initrd "$OUT/master/initramfs.img" \
        -append "${cmdline:-console=ttyS0}" \
        -drive "file=$disk,if=virtio,format=qcow2" \
        -serial "file:$console" -monitor none \
        -daemonize -pidfile "$pidfile"
    echo "cluster: booting $NODE (pid $(cat "$pidfile")), data disk $disk, console $console"
    # Follow the console until multi-user.target (TCG: 20-90 s).
    tail -n +1 -f "$console" --pid "$(cat "$pidfile")" | sed -u 's/\x1b\[[0-9;]*[A-Za-z]//g' &
    tailer=$!
    trap 'kill $tailer 2>/dev/null || true' EXIT
    start=$(date +%s)
    until grep -q 'Reached target.*multi-user.target' "$console"; do
        if ! running; then
            echo "cluster: QEMU exited during boot; console: $console" >&2
            exit 1
        fi
        if [ $(( $(date +%s) - start )) -ge "$BOOT_TIMEOUT" ]; then
            echo "cluster: $NODE did not reach multi-user.target in ${BOOT_TIMEOUT}s; console: $console" >&2
            exit 1
        fi
        sleep 1
    done
    sleep 1
    kill $tailer 2>/dev/null || true
    echo
    echo "cluster: $NODE reached multi-user.target in $(( $(date +%s) - start ))s and keeps running in the background."
    echo "cluster: console log: $console   status: make cluster-status   stop: make cluster-down"
}

status() {
    if running; then
        echo "$NODE: running (pid $(cat "$pidfile")), data disk $disk"
        echo "--- last console lines ($console)"
        tail -n 15 "$console" | sed -u 's/\x1b\[[0-9;]*[A-Za-z]//g'
    else
        echo "$NODE: not running (\`make cluster\` starts it)"
    fi
}

down() {
    if running; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "cluster: stopped $NODE (pid $pid)"
    else
        echo "cluster: $NODE is not running"
    fi
    rm -f "$pidfile"
    if [ "${1:-}" = "--purge" ] || [ "${PURGE:-0}" = 1 ]; then
        rm -f "$disk" "$console"
        echo "cluster: removed $disk and $console"
    fi
}

case "${1:-}" in
    up) up ;;
    status) status ;;
    down) shift; down "$@" ;;
    *) echo "usage: $0 up|status|down [--purge]" >&2; exit 2 ;;
esac
