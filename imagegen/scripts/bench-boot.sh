#!/usr/bin/env bash
# Boot benchmark: what the root filesystem of issue 12 (stage 0 + the node
# basics) costs at boot. Three variants of the master image, each booted
# BOOT_RUNS times under QEMU (TCG, 2 vCPUs, 1536 MiB, no disk, no NIC):
#
#   before       the profiles and overlays of BEFORE_REV (the commit before
#                the change), built by the same imagegen, booted with
#                rdinit=/usr/lib/systemd/systemd: exactly the old boot path
#                (systemd as PID 1 straight from rootfs, no stage 0)
#   after        the current image (stage 0, resolved, CNI plugins, ...)
#   after-no-stage0  the current image with rdinit=/usr/lib/systemd/systemd:
#                isolates stage 0's own cost from the added packages
#
# Measured per boot: seconds from starting QEMU to "Reached target
# multi-user.target" on the console, and QEMU's resident memory (VmRSS,
# what the guest has touched plus QEMU's own) when the self-test has
# printed its report. Prints a table; writes bench/results/boot.json.
# Reported, not asserted (a benchmark, not a test).
set -euo pipefail

IMAGEGEN=${IMAGEGEN:-target/release/imagegen}
OUT=${OUT:-out}
CACHE=${IMAGEGEN_CACHE:-.cache}
RUNS=${BOOT_RUNS:-2}
BEFORE_REV=${BEFORE_REV:-6e5738c}
RESULTS=${RESULTS:-bench/results/boot.json}
TIMEOUT=${BOOT_TIMEOUT:-900}
# The agent baked into the "before" image (default: imagegen's own default,
# target/release/agent); the same one as in $OUT/master keeps them comparable.
AGENT_BIN=${AGENT_BIN:-}

for p in qemu-system-x86_64 git; do
    command -v "$p" >/dev/null || { echo "bench-boot: $p not found (make deps)" >&2; exit 1; }
done
[ -x "$IMAGEGEN" ] || { echo "bench-boot: $IMAGEGEN not found: run \`make build\`" >&2; exit 1; }
[ -f "$OUT/master/initramfs.img" ] || { echo "bench-boot: $OUT/master missing: run \`make image\`" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-boot.XXXXXX")
qpid=""
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The "before" image: the old profiles and overlays, the same lockfile
# resolution rules and cache, without Kubernetes (as every bench image).
git archive "$BEFORE_REV" profiles overlays | tar -x -C "$work"
"$IMAGEGEN" lock "$work/profiles/master.toml" --lockfile "$work/before.lock" --cache "$CACHE" >/dev/null
"$IMAGEGEN" build "$work/profiles/master.toml" --lockfile "$work/before.lock" --cache "$CACHE" \
    --out "$work/before" --without-kubernetes --no-progress ${AGENT_BIN:+--agent-bin "$AGENT_BIN"} >/dev/null

now() { date +%s.%N; }
field() { sed -n "s/^ *\"$1\": \([0-9]*\),*$/\1/p" "$2/manifest.json" | head -n 1; }

# boot DIR EXTRA_CMDLINE: sets B_SECS (to multi-user) and B_RSS (KiB)
boot() {
    local dir=$1 extra=$2 log=$work/console.log
    : > "$log"
    local cmdline
    cmdline=$(sed -n 's/^ *"cmdline": "\(.*\)",*$/\1/p' "$dir/manifest.json" | head -n 1)
    local start
    start=$(now)
    qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -no-user-config -display none \
        -monitor none -no-reboot -m 1536 -smp 2 -serial "file:$log" \
        -kernel "$dir/vmlinuz" -initrd "$dir/initramfs.img" -append "$cmdline $extra" \
        -smbios "type=11,value=io.systemd.credential:kubeboot.selftest=bench/poweroff" \
        2>"$work/qemu.err" &
    qpid=$!
    local multi="" rss="" t
    while kill -0 "$qpid" 2>/dev/null; do
        t=$(now)
        if [ -z "$multi" ] && grep -q 'Reached target.*Multi-User System\|Reached target multi-user.target' "$log"; then
            multi=$(awk -v a="$t" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
        fi
        if [ -z "$rss" ] && grep -q 'KUBEBOOT-SELFTEST end' "$log"; then
            rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$qpid/status" 2>/dev/null || true)
        fi
        if awk -v a="$t" -v b="$start" -v m="$TIMEOUT" 'BEGIN { exit !(a - b > m) }'; then
            kill "$qpid"
            cp "$log" "${TMPDIR:-/tmp}/bench-boot-failed.log"
            echo "bench-boot: $dir did not finish in ${TIMEOUT}s; console: ${TMPDIR:-/tmp}/bench-boot-failed.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    wait "$qpid" || true
    qpid=""
    if [ -z "$multi" ] || [ -z "$rss" ]; then
        cat "$work/qemu.err" >> "$log"
        cp "$log" "${TMPDIR:-/tmp}/bench-boot-failed.log"
        echo "bench-boot: no multi-user.target or no self-test report; console: ${TMPDIR:-/tmp}/bench-boot-failed.log" >&2
        exit 1
    fi
    B_SECS=$multi B_RSS=$rss
}

declare -A secs rss
variants="before after after-no-stage0"
for v in $variants; do
    case $v in
        before) dir=$work/before extra="rdinit=/usr/lib/systemd/systemd" ;;
        after) dir=$OUT/master extra="" ;;
        after-no-stage0) dir=$OUT/master extra="rdinit=/usr/lib/systemd/systemd" ;;
    esac
    secs[$v]="" rss[$v]=""
    for i in $(seq "$RUNS"); do
        boot "$dir" "$extra"
        s=$B_SECS r=$B_RSS
        echo "bench-boot: $v run $i: multi-user after ${s}s, QEMU RSS $((r / 1024)) MiB" >&2
        secs[$v]="${secs[$v]}${secs[$v]:+,}$s"
        rss[$v]="${rss[$v]}${rss[$v]:+,}$r"
    done
    printf -v "size_${v//-/_}" '%s' "$(field initramfs_compressed "$dir")"
    printf -v "usize_${v//-/_}" '%s' "$(field initramfs_uncompressed "$dir")"
done

median() { echo "$1" | tr ',' '\n' | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

mkdir -p "$(dirname "$RESULTS")"
{
    echo "{"
    echo "  \"image\": \"master (without Kubernetes)\","
    echo "  \"before_rev\": \"$BEFORE_REV\","
    echo "  \"runs\": $RUNS,"
    echo "  \"variants\": {"
    sep=""
    for v in $variants; do
        cs=size_${v//-/_}; us=usize_${v//-/_}
        printf '%s    "%s": {"multi_user_seconds": [%s], "qemu_rss_kib": [%s], "initramfs_compressed_bytes": %s, "initramfs_uncompressed_bytes": %s}' \
            "$sep" "$v" "${secs[$v]}" "${rss[$v]}" "${!cs:-0}" "${!us:-0}"
        sep=$',\n'
    done
    echo
    echo "  }"
    echo "}"
} > "$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"

printf '\nboot benchmark (master image, %s runs each, TCG; medians)\n' "$RUNS"
printf '%-18s %14s %14s %16s\n' variant "multi-user s" "QEMU RSS MiB" "initramfs MB"
for v in $variants; do
    cs=size_${v//-/_}
    printf '%-18s %14s %14s %16s\n' "$v" "$(median "${secs[$v]}")" \
        "$(( $(median "${rss[$v]}" | cut -d. -f1) / 1024 ))" \
        "$(awk -v a="${!cs:-0}" 'BEGIN { printf "%.1f", a / 1000000 }')"
done
echo "results: $RESULTS"
