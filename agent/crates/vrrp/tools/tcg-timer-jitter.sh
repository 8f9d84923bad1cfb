#!/bin/bash
# Measures how late a 200 ms timer loop runs inside QEMU TCG guests (no KVM),
# the sender-side stall that decides whether a VRRP backup flaps (see the
# crate README, "Interval"). Usage:
#   tools/tcg-timer-jitter.sh VMLINUZ [GUESTS]
# Needs qemu-system-x86, cpio, python3 and busybox-static (downloaded with
# `apt-get download` into the scratch directory, not installed).
set -euo pipefail
kernel=${1:?usage: $0 VMLINUZ [GUESTS]}
guests=${2:-2}
work=$(mktemp -d /tmp/vrrp-tcg.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download busybox-static >/dev/null 2>&1 || { echo "apt-get download busybox-static failed" >&2; exit 1; }
dpkg-deb -x busybox-static_*.deb x
mkdir -p root/bin root/proc
cp x/bin/busybox root/bin/busybox
cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc p /proc
n=0
while [ $n -lt 300 ]; do
  read up idle < /proc/uptime
  echo "UP $up"
  /bin/busybox usleep 200000
  n=$((n+1))
done
/bin/busybox poweroff -f
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc 2>/dev/null | gzip) > init.cpio.gz
for g in $(seq 1 "$guests"); do
  timeout 300 qemu-system-x86_64 -accel tcg -m 256 -smp 1 -kernel "$kernel" -initrd init.cpio.gz \
    -append "console=ttyS0 quiet panic=-1" -nographic -no-reboot -monitor none -display none \
    </dev/null 2>&1 | tr -d '\r' > "out$g.txt" &
done
wait
python3 - out*.txt <<'PY'
import sys
for f in sys.argv[1:]:
    ups = [float(l.split()[1]) for l in open(f) if l.startswith("UP ")]
    gaps = sorted((b - a) * 1000 for a, b in zip(ups, ups[1:]))
    if not gaps:
        print(f, "no samples (guest did not boot?)"); continue
    n = len(gaps)
    print(f"{f}: {n} periods of a 200 ms loop: median {gaps[n//2]:.0f} ms, "
          f"p99 {gaps[int(n*0.99)]:.0f} ms, max {gaps[-1]:.0f} ms, >500 ms: {sum(g > 500 for g in gaps)}")
PY
