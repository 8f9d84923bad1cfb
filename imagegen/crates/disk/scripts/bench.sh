#!/bin/bash
# bench-disk: disk image sizes and the time to build every disk format from
# a built image (warm: the kernel + initramfs exist, as after `make image`).
# Prints a table and writes bench/results/disk.json.
#   OUT=out IMAGEGEN=target/release/imagegen [ROLES="master worker"] imagegen/crates/disk/scripts/bench.sh
set -euo pipefail
OUT=${OUT:-out}
IMAGEGEN=${IMAGEGEN:-target/release/imagegen}
RESULTS=${RESULTS:-bench/results/disk.json}
RUNS=${RUNS:-3}
command -v zstd >/dev/null || { echo "bench-disk: zstd missing: apt-get install zstd" >&2; exit 1; }
[ -x "$IMAGEGEN" ] || { echo "bench-disk: $IMAGEGEN missing: cargo build --release -p imagegen" >&2; exit 1; }

mkdir -p "$(dirname "$RESULTS")"
rows=()
json_images=()
for role in ${ROLES:-master worker}; do
    img="$OUT/$role"
    [ -f "$img/initramfs.img" ] || { echo "bench-disk: $img/initramfs.img missing: make image" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    best=""
    for i in $(seq "$RUNS"); do
        rm -rf "$work/out"
        start=$(date +%s.%N)
        "$IMAGEGEN" disk "$img" --format raw,qcow2,vmdk,vdi,vhd,aws --out "$work/out" >"$work/log" 2>&1 \
            || { cat "$work/log" >&2; exit 1; }
        end=$(date +%s.%N)
        t=$(echo "$end - $start" | bc)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
    done
    raw=$(stat -c %s "$work/out/disk.raw")
    zst=$(zstd -q -c -3 -T1 "$work/out/disk.raw" | wc -c)
    sizes=""
    for f in qcow2 vmdk vdi vhd; do
        sizes="$sizes\"$f\": $(stat -c %s "$work/out/disk.$f"), "
    done
    rows+=("$(printf '%-7s %10.1f %10.1f %10.1f %10.1f %10.1f %8.2f' "$role" \
        "$(echo "$raw/1048576" | bc -l)" "$(echo "$zst/1048576" | bc -l)" \
        "$(echo "$(stat -c %s "$work/out/disk.qcow2")/1048576" | bc -l)" \
        "$(echo "$(stat -c %s "$work/out/disk.vmdk")/1048576" | bc -l)" \
        "$(echo "$(stat -c %s "$work/out/disk.vdi")/1048576" | bc -l)" "$best")")
    json_images+=("\"$role\": {\"raw_bytes\": $raw, \"raw_zstd3_bytes\": $zst, ${sizes}\"all_formats_seconds_best_of_$RUNS\": $best}")
    rm -rf "$work"
    trap - EXIT
done

printf '%-7s %10s %10s %10s %10s %10s %8s\n' image "raw MiB" "zstd MiB" "qcow2 MiB" "vmdk MiB" "vdi MiB" "all s"
printf '%s\n' "${rows[@]}"
{
    echo "{"
    echo "  \"what\": \"disk images from a built kernel+initramfs: sizes and wall time to build raw,qcow2,vmdk,vdi,vhd,aws (best of $RUNS)\","
    echo "  \"host_cpus\": $(nproc),"
    echo "  \"images\": {"
    sep=""
    for j in "${json_images[@]}"; do printf '%s    %s' "$sep" "$j"; sep=$',\n'; done
    echo
    echo "  }"
    echo "}"
} > "$RESULTS"
echo "bench-disk: wrote $RESULTS"
