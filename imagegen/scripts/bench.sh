#!/usr/bin/env bash
# imagegen benchmark: cold build (empty cache), warm rebuild (everything
# cached), initramfs sizes, and the same package set extracted by mmdebstrap
# into a tarball as the reference, measured in the same run. Prints a table
# and writes bench/results/imagegen.json. Goals (reported, not asserted):
# warm rebuild < 10 s, cold build no slower than mmdebstrap, master
# initramfs < 100 MB compressed.
set -euo pipefail

IMAGEGEN=${IMAGEGEN:-target/release/imagegen}
PROFILE=${PROFILE:-profiles/master.toml}
RESULTS=${RESULTS:-bench/results/imagegen.json}
FLAGS=${IMAGEGEN_FLAGS:---without-kubernetes --no-progress}

command -v mmdebstrap >/dev/null || { echo "bench: mmdebstrap not found: install the Debian package mmdebstrap" >&2; exit 1; }
[ -x "$IMAGEGEN" ] || { echo "bench: $IMAGEGEN not found: run \`make build\`" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/imagegen-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? "true" : "false" }'; }

# One lockfile for every run, so all builds and mmdebstrap get the same set.
"$IMAGEGEN" lock "$PROFILE" --lockfile "$work/bench.lock" --cache "$work/lock-cache" >/dev/null
packages=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$work/bench.lock" | paste -sd, -)
npackages=$(echo "$packages" | tr ',' '\n' | grep -c .)
mirror=$(sed -n 's/^url = "\(.*\)"$/\1/p' "$work/bench.lock" | head -n 1)
suite=$(sed -n 's/^suite = "\(.*\)"$/\1/p' "$work/bench.lock" | head -n 1)

t=$(now)
"$IMAGEGEN" build "$PROFILE" --lockfile "$work/bench.lock" --cache "$work/cache" --out "$work/cold" $FLAGS >/dev/null
cold=$(since "$t")

t=$(now)
"$IMAGEGEN" build "$PROFILE" --lockfile "$work/bench.lock" --cache "$work/cache" --out "$work/warm" $FLAGS >/dev/null
warm=$(since "$t")

manifest=$work/warm/manifest.json
field() { sed -n "s/^ *\"$1\": \([0-9]*\),*$/\1/p" "$manifest" | head -n 1; }
compressed=$(field initramfs_compressed)
uncompressed=$(field initramfs_uncompressed)
identical=false
cmp -s "$work/cold/initramfs.img" "$work/warm/initramfs.img" && identical=true

t=$(now)
mmdebstrap --quiet --mode=root --variant=extract --include="$packages" \
    "$suite" "$work/reference.tar" "$mirror" >/dev/null 2>"$work/mmdebstrap.log" \
    || { cat "$work/mmdebstrap.log" >&2; echo "bench: mmdebstrap failed" >&2; exit 1; }
reference=$(since "$t")
reference_bytes=$(stat -c %s "$work/reference.tar")

mkdir -p "$(dirname "$RESULTS")"
cat > "$RESULTS.tmp" <<JSON
{
  "profile": "$PROFILE",
  "packages": $npackages,
  "cold_build_seconds": $cold,
  "warm_rebuild_seconds": $warm,
  "initramfs_compressed_bytes": $compressed,
  "initramfs_uncompressed_bytes": $uncompressed,
  "cold_and_warm_identical": $identical,
  "mmdebstrap_extract_seconds": $reference,
  "mmdebstrap_tarball_bytes": $reference_bytes,
  "goals": {
    "warm_rebuild_under_10s": $(lt "$warm" 10),
    "cold_no_slower_than_mmdebstrap": $(lt "$cold" "$reference"),
    "initramfs_under_100MB": $( [ "$compressed" -lt 100000000 ] && echo true || echo false )
  }
}
JSON
mv "$RESULTS.tmp" "$RESULTS"

mb() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1000000 }'; }
printf '\nimagegen benchmark (%s, %s packages)\n' "$PROFILE" "$npackages"
printf '%-44s %12s\n' "measure" "value"
printf '%-44s %11.1fs\n' "cold build (empty cache, downloads)" "$cold"
printf '%-44s %11.1fs\n' "warm rebuild (everything cached)" "$warm"
printf '%-44s %10s MB\n' "initramfs compressed" "$(mb "$compressed")"
printf '%-44s %10s MB\n' "initramfs uncompressed" "$(mb "$uncompressed")"
printf '%-44s %12s\n' "cold and warm outputs identical" "$identical"
printf '%-44s %11.1fs\n' "mmdebstrap --variant=extract (reference)" "$reference"
printf '%-44s %10s MB\n' "mmdebstrap tarball" "$(mb "$reference_bytes")"
printf 'results: %s\n' "$RESULTS"
