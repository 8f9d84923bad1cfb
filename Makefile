# Entry points. `make cluster` is the main job, `make test` runs every test,
# `make bench` prints the benchmark tables and writes bench/results/*.json.
# Every target that needs a program installs it through `deps` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
OUT ?= out
# Bounded fuzzing in `make test`: runs per target.
FUZZ_RUNS ?= 200000
export CARGO_TERM_COLOR ?= never

APT_PACKAGES := qemu-system-x86 qemu-utils ovmf protobuf-compiler etcd-server etcd-client \
	keepalived containerd runc mmdebstrap debian-archive-keyring iproute2 iputils-ping \
	arping tcpdump zstd cpio kmod e2fsprogs openssl socat dnsmasq-base
# etcd-client's build script runs protoc on etcd's .proto files, which import
# google/protobuf/{descriptor,struct}.proto: those ship in libprotobuf-dev,
# only a Recommends of protobuf-compiler (not installed: --no-install-recommends).
# A vendored protoc (protobuf-src) would compile protobuf's C++ on every cold
# CI build; the package is the cheaper way to the same files.
APT_PACKAGES += libprotobuf-dev
# rustc links through `cc`, and ring's, zstd's and lzma's build scripts
# compile C: rustup installs no C toolchain.
APT_PACKAGES += gcc libc6-dev
# qemu-tests/tests/kubernetes.rs: the API's /readyz on the VIP, TLS verified.
APT_PACKAGES += curl
# imagegen/crates/kubernetes-payload/tests/registry.rs: a real distribution registry on loopback (its
# own config and storage; the packaged service is not used) and skopeo to
# push test images into it.
APT_PACKAGES += docker-registry skopeo
# agent/crates/balancer/benches/haproxy.rs (`make bench-balancer`): HAProxy,
# the reference the agent's API load balancer is measured against.
APT_PACKAGES += haproxy
# supervisor tests (owner: agent/crates/supervisor): a private message bus and
# `systemd-analyze verify` for the generated unit files.
APT_PACKAGES += dbus-daemon systemd

.PHONY: help deps build image cluster cluster-status cluster-down test lint unit fuzz bench clean

help:
	@echo "make cluster   build the images and boot the masters (the main job)"
	@echo "make test      install what is needed and run every test"
	@echo "make bench     run the benchmarks (tables + bench/results/*.json)"
	@echo "make image     build the master and worker images into $(OUT)/"
	@echo "               K8S=auto (default: pinned Kubernetes downloaded, none when upstream"
	@echo "               is unreachable), K8S=download, K8S=none, K8S_COMPONENTS=DIR (air-gapped)"
	@echo "make test K8S_COMPONENTS=DIR   also the real-kubeadm cluster test from DIR"
	@echo "make deps      install apt packages and Rust components"
	@echo "make check-fresh  make deps + a release build in a fresh Debian root (~30 min, not in make test)"

## deps: apt packages and Rust components. Idempotent; quick when all is there.
## scripts/apt-deps.sh installs what is missing; when the machine has QEMU
## packages at a version its apt sources do not offer (qemu-utils 10.x from
## bookworm-backports with no backports source left: "qemu-utils Breaks
## qemu-system-common (< 8.0)" when installing bookworm's qemu-system-x86),
## it moves them to qemu-system-x86's candidate version (--allow-downgrades),
## so every machine runs the archive's QEMU. `make check-fresh` proves this
## target on a minimal Debian root.
deps:
	@scripts/apt-deps.sh $(APT_PACKAGES)
	@command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@for c in rustfmt clippy; do rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add $$c; done
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal \
		|| { echo "deps: the fuzz targets need a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz

## check-fresh: the README's install path from zero: a minimal Debian root
## (mmdebstrap, the host's apt sources), the host's Rust toolchain read-only,
## a clone of HEAD, then `make deps` and `make build` in a chroot; prints what
## was installed and how long it took (scripts/check-fresh.sh). A cold build
## of the whole workspace (~20-30 min on 2 cores): not part of `make test`.
## Run it before resolving anything that touches dependencies.
.PHONY: check-fresh
check-fresh:
	scripts/check-fresh.sh

## build: every binary, release profile. `unit` tests in the same profile so
## the dependencies compile once for both (CI's 2 cores care).
build: deps
	$(CARGO) build --release --workspace --bins

## lint: clippy in the release profile, so its proc-macros and build scripts
## (ring's and zstd's C code, serde/tokio/zbus/prost macros) are the ones
## `build` and `unit` reuse instead of a second dev-profile set.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --release --workspace

## fuzz: every cargo-fuzz target under */crates/*/fuzz and */fuzz, bounded by
## FUZZ_RUNS and FUZZ_SECONDS per target. One shared target dir so the fuzz
## crates compile their common dependencies once. FUZZ_SANITIZER=none by
## default: the targets are safe Rust (a panic is what libFuzzer catches),
## and AddressSanitizer instrumentation of every dependency costs minutes of
## CI compile time and halves the executions per second; FUZZ_SANITIZER=address
## for a deeper local run.
FUZZ_SECONDS ?= 15
FUZZ_SANITIZER ?= none
fuzz: deps
	@for dir in $$(ls -d agent/crates/*/fuzz imagegen/crates/*/fuzz imagegen/fuzz agent/fuzz 2>/dev/null); do \
		for t in $$(cd $$dir/.. && $(CARGO) +nightly fuzz list); do \
			echo "fuzz: $$dir $$t (up to $(FUZZ_RUNS) runs or $(FUZZ_SECONDS) s)"; \
			(cd $$dir/.. && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz $(CARGO) +nightly fuzz run --sanitizer $(FUZZ_SANITIZER) $$t -- \
				-runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
		done; \
	done

test: deps lint unit fuzz
	@echo "make test: all passed"

## bench: every area's benchmark; each prints its table and writes
## bench/results/<area>.json; the summary lists them at the end.
bench: deps
	@mkdir -p bench/results
	$(MAKE) bench-imagegen
	$(MAKE) bench-boot
	$(MAKE) bench-disk
	$(MAKE) bench-quorum
	$(MAKE) bench-vrrp
	$(MAKE) bench-balancer
	$(MAKE) bench-recovery
	$(MAKE) bench-cluster
	$(MAKE) bench-kubernetes
	@echo; echo "bench: results in bench/results/:"; ls -l bench/results/*.json

clean:
	rm -rf $(OUT) target

## bench-vrrp (owner: agent/crates/vrrp): VIP failover, keepalived vs the
## agent at the same interval in the same run (ratio), planned stop vs hard
## failure (lost pings), and with etcd the quorum-loss resign time and the
## minority-holder count (must be 0); 20 trials per row in network
## namespaces (~15-20 min, VRRP_BENCH_TRIALS); prints a table and writes
## bench/results/vrrp.json. The lead wires it into `bench`.
.PHONY: bench-vrrp
bench-vrrp: deps
	@mkdir -p bench/results
	$(CARGO) bench -p vrrp --bench failover

## bench-balancer (owner: agent/crates/balancer): the agent's API load
## balancer against HAProxy (`mode tcp`, the kubeadm HA guide's
## configuration) on the same three `openssl s_server` TLS backends, the
## same client and the same run, in network namespaces: connections/s and
## p50/p99 latency (one new TLS connection per request, 8 in flight) and
## failed requests while a backend is killed, medians of
## BALANCER_BENCH_RUNS (3) interleaved runs of BALANCER_BENCH_REQUESTS
## (3000) requests (~1-2 min, root); prints a table and writes
## bench/results/balancer.json. Part of `make bench`.
.PHONY: bench-balancer
bench-balancer: deps
	@mkdir -p bench/results
	$(CARGO) bench -p balancer --bench haproxy

## bench-recovery (owner: agent/, issue 17): recovery time objective,
## from `agent recover` to a healthy 3-voter cluster (lost masters back
## with their old disks, or blank replacements; no VIP in the namespaces,
## so the VIP's share is not measured), and `agent etcd snapshot` of
## 10,000 keys (time, size); medians of 3, real etcd, agents in network
## namespaces (root). Prints a table, writes bench/results/recovery.json.
## Part of `make bench`.
.PHONY: bench-recovery
bench-recovery: deps
	@mkdir -p bench/results
	$(CARGO) bench -p agent --bench recovery

## bench-vrrp-chaos (owner: agent/crates/vrrp): the quorum rule under 100
## seeded cut/partition/kill/stop sequences (odd seeds 3 masters, even 5;
## real etcd; VIP sampled every 20 ms, adverts captured; ~60 min,
## VRRP_CHAOS_SEEDS to change the count); fails on any minority holder,
## claim or two holders; writes bench/results/vrrp-chaos.json. Three
## sequences of it run in `make test` (tests/chaos.rs).
.PHONY: bench-vrrp-chaos
bench-vrrp-chaos: deps
	@mkdir -p bench/results
	$(CARGO) test --release -p vrrp --test chaos -- --ignored --nocapture chaos_many

## bench-quorum (owner: agent/): time from the last of three agents starting
## to a healthy 3-voter TLS etcd cluster, split into etcd's own start-up (the
## same members with a hand-written static config) and the agent's overhead,
## plus the idle agent's RSS (~1-2 min, root, network namespaces); prints a
## table and writes bench/results/quorum.json. The lead wires it into `bench`.
.PHONY: bench-quorum
bench-quorum: deps
	@mkdir -p bench/results
	$(CARGO) bench -p agent --bench quorum

## imagegen (owner: imagegen/, profiles/, overlays/, qemu-tests/): images,
## the one-master cluster, the smoke and reproducibility checks, the bench.
## Packages are pinned per build in $(OUT)/locks/ and cached in .cache/.
##
## Where the Kubernetes components and control-plane images come from
## (`make image`, `make cluster`, `make disk-image`):
##   K8S=auto      (default) download the pinned, SHA256/digest-checked
##                 components and images; when upstream is unreachable,
##                 build without Kubernetes and record why (etcd + VIP only)
##   K8S=download  download them; fail when upstream is unreachable
##   K8S=none      build without Kubernetes (recorded in the image)
##   K8S_COMPONENTS=DIR  take them from a directory (air-gapped; how to fill
##                 it: imagegen/README.md); wins over K8S
## The tests and benches never download: their images are built without
## Kubernetes (target-specific K8S_FLAGS below), so `make test` is the same
## here, on CI and on a machine with internet. `make test K8S_COMPONENTS=DIR`
## additionally builds $(OUT)/k8s/{master,worker} from DIR and runs the
## real-kubeadm QEMU test (qemu-tests/tests/kubernetes.rs) on them.
IMAGEGEN := target/release/imagegen
IMAGEGEN_CACHE ?= .cache
IMAGEGEN_FLAGS ?= --no-progress
K8S ?= auto
K8S_COMPONENTS ?=
ifeq ($(filter $(K8S),auto download none),)
$(error K8S=$(K8S): expected auto, download or none (or K8S_COMPONENTS=DIR))
endif
ifneq ($(words $(K8S)),1)
$(error K8S=$(K8S): expected one of auto, download, none)
endif
# imagegen's flags for the Kubernetes source of `make image`.
K8S_FLAGS = $(if $(K8S_COMPONENTS),--components-dir $(abspath $(K8S_COMPONENTS)),--kubernetes $(K8S))
# The images of every test and bench: never Kubernetes, whatever K8S says
# (`--without-kubernetes` is imagegen's `--kubernetes none`). GNU make
# hands target-specific values to the prerequisites (image, disk-image).
K8S_NONE := --without-kubernetes
test unit lint fuzz test-imagegen test-reproducible test-cluster test-power-cut \
	test-disk test-disk-reproducible test-kubernetes \
	bench bench-cluster bench-disk bench-imagegen bench-boot: K8S_FLAGS = $(K8S_NONE)
# Images with Kubernetes for the real-kubeadm test.
K8S_OUT := $(OUT)/k8s
.PHONY: test-imagegen test-reproducible bench-imagegen k8s-image test-kubernetes

image: build
	@mkdir -p $(OUT)/locks
	@for p in master worker; do \
		$(IMAGEGEN) lock profiles/$$p.toml --lockfile $(OUT)/locks/$$p.lock --cache $(IMAGEGEN_CACHE) && \
		$(IMAGEGEN) build profiles/$$p.toml --lockfile $(OUT)/locks/$$p.lock --out $(OUT)/$$p \
			--cache $(IMAGEGEN_CACHE) $(IMAGEGEN_FLAGS) $(K8S_FLAGS) || exit 1; \
	done

## k8s-image: master and worker WITH Kubernetes into $(K8S_OUT)/ (same
## lockfiles), from K8S_COMPONENTS=DIR or else downloaded (fails when
## upstream is unreachable): the images of the real-kubeadm test.
k8s-image: image
	@for p in master worker; do \
		$(IMAGEGEN) build profiles/$$p.toml --lockfile $(OUT)/locks/$$p.lock --out $(K8S_OUT)/$$p \
			--cache $(IMAGEGEN_CACHE) $(IMAGEGEN_FLAGS) \
			$(if $(K8S_COMPONENTS),--components-dir $(abspath $(K8S_COMPONENTS)),--kubernetes download) \
			|| exit 1; \
	done

## test-kubernetes: the real-kubeadm QEMU test alone (3 masters + 1 worker
## from $(K8S_OUT); kubeadm under TCG: 20-45 min). KUBEBOOT_K8S_TIMEOUT=<s>
## raises the kube phase's budget (default 2700).
test-kubernetes: k8s-image
	KUBEBOOT_K8S_IMAGES=$(abspath $(K8S_OUT)) $(CARGO) test --release -p qemu-tests --test kubernetes -- --nocapture

# `make test K8S_COMPONENTS=DIR`: `cargo test --workspace` (unit) runs the
# real-kubeadm test on images built from DIR; without it that test says
# SKIPPED and forms no cluster.
ifneq ($(K8S_COMPONENTS),)
unit: k8s-image
unit: export KUBEBOOT_K8S_IMAGES = $(abspath $(K8S_OUT))
endif

## cluster (owner: qemu-tests/): three masters (plus WORKERS=N workers) from
## $(OUT) in a private network namespace under QEMU (TCG), left running in
## the background; with Kubernetes in the images (K8S, K8S_COMPONENTS above)
## it follows kubeadm init/join on every node (KUBE_TIMEOUT, default 2700 s)
## and prints a kubeconfig; disks, console logs and status streams in $(CLUSTER_DIR)
## (kept by cluster-down, deleted by cluster-down PURGE=1). SECRET_FILE=...
## gives the cluster secret (default: generated once into $(CLUSTER_DIR)/secret).
## CLUSTER_CONFIG=FILE gives every node a cluster configuration over the
## image's (the kubeboot.config credential): e.g. [etcd]/[vrrp] timing for a
## slow machine, as qemu-tests/README.md shows for Kubernetes under TCG.
CLUSTER_BIN := target/release/kubeboot-cluster
CLUSTER_DIR ?= run/cluster
WORKERS ?= 0
PURGE ?= 0
.PHONY: test-cluster bench-cluster test-power-cut bench-kubernetes

cluster: image
	KUBEBOOT_IMAGES=$(OUT) $(CLUSTER_BIN) --run-dir $(CLUSTER_DIR) up --workers $(WORKERS)

## bench-kubernetes: with K8S_COMPONENTS=DIR, power-on of three masters to
## the API ready on the VIP and a power cut of the VIP holder to the API
## answering on the VIP again, BENCH_RUNS times (medians), with the TCG
## timing of qemu-tests/tcg-timing.toml; writes bench/results/kubernetes.json.
## Without DIR it says SKIPPED (no Kubernetes components here).
bench-kubernetes: deps
	@mkdir -p bench/results
	@if [ -z "$(K8S_COMPONENTS)" ]; then \
		echo "bench-kubernetes: SKIPPED: no components directory given (make bench-kubernetes K8S_COMPONENTS=DIR)"; \
	else \
		$(MAKE) k8s-image && \
		KUBEBOOT_IMAGES=$(abspath $(K8S_OUT)) $(CLUSTER_BIN) --run-dir target/qemu-bench \
			bench-kubernetes --runs $(BENCH_RUNS) --config qemu-tests/tcg-timing.toml \
			--out bench/results/kubernetes.json; \
	fi

cluster-status:
	@test -x $(CLUSTER_BIN) || $(CARGO) build --release -p qemu-tests --bin kubeboot-cluster
	@$(CLUSTER_BIN) --run-dir $(CLUSTER_DIR) status

cluster-down:
	@test -x $(CLUSTER_BIN) || $(CARGO) build --release -p qemu-tests --bin kubeboot-cluster
	@PURGE=$(PURGE) $(CLUSTER_BIN) --run-dir $(CLUSTER_DIR) down

## test-cluster: the end-to-end scenarios alone (also part of `unit`):
## assembly with a power cut, failover, rejoin, intruder, partition, replacement
## with a power cut, worker (7-8 min measured under load). KUBEBOOT_SEED=<n>
## replays the power-cut points of a run (printed at its start and on failure).
test-cluster: image
	KUBEBOOT_IMAGES=$(OUT) $(CARGO) test --release -p qemu-tests --test cluster -- --nocapture

## test-power-cut: scenario 7 over several seeds: the cluster test once per
## seed in SEEDS (each seed cuts other masters at other points); not in `make test`.
SEEDS ?= 1 2 3
test-power-cut: image
	@set -e; for s in $(SEEDS); do \
		echo "=== test-power-cut: KUBEBOOT_SEED=$$s ==="; \
		KUBEBOOT_SEED=$$s KUBEBOOT_IMAGES=$(OUT) $(CARGO) test --release -p qemu-tests --test cluster -- --nocapture; \
	done

## bench-cluster: power-on to healthy quorum (three masters at once) split
## into guest boot and agent + etcd, and VIP failover inside the guests;
## BENCH_RUNS fresh clusters (~5 min each under TCG); prints a table and
## writes bench/results/cluster.json. Part of `make bench`.
BENCH_RUNS ?= 3
bench-cluster: deps image
	@mkdir -p bench/results
	KUBEBOOT_IMAGES=$(OUT) $(CLUSTER_BIN) --run-dir target/qemu-bench bench --runs $(BENCH_RUNS) --out bench/results/cluster.json

# `cargo test --workspace` (unit) runs the QEMU smoke test, which boots
# $(OUT)/master: build the images first.
unit: image

## test-reproducible: build the master image a second time from the same
## lockfile into another directory; every output must be bit-identical.
test-reproducible: image
	@rm -rf $(OUT)/repro
	@# Two builds back to back: `cargo test` may relink target/release/agent
	@# with other features in between, so $(OUT)/master is not the reference.
	for d in a b; do $(IMAGEGEN) build profiles/master.toml --lockfile $(OUT)/locks/master.lock \
		--out $(OUT)/repro/$$d --cache $(IMAGEGEN_CACHE) $(IMAGEGEN_FLAGS) $(K8S_FLAGS) || exit 1; done
	@for f in vmlinuz initramfs.img manifest.json; do \
		a=$$(sha256sum < $(OUT)/repro/a/$$f | cut -d' ' -f1); b=$$(sha256sum < $(OUT)/repro/b/$$f | cut -d' ' -f1); \
		if [ "$$a" != "$$b" ]; then echo "reproducibility: $$f differs: $$a vs $$b" >&2; exit 1; fi; \
		echo "reproducible: $$f $$a"; \
	done

## test-imagegen: the QEMU smoke test alone (also part of `unit`) plus the
## reproducibility check.
test-imagegen: image test-reproducible
	KUBEBOOT_IMAGES=$(OUT) $(CARGO) test -p qemu-tests --test smoke

test: test-reproducible

## bench-boot: what the root of issue 12 costs at boot: the master image
## before the change (old profiles/overlays, old boot path), after, and
## after without stage 0: boot to multi-user.target and QEMU RSS after
## boot under TCG (BOOT_RUNS, default 2, boots per variant, ~2 min each);
## writes bench/results/boot.json. Part of `make bench`.
.PHONY: bench-boot
bench-boot: deps image
	@mkdir -p bench/results
	OUT=$(OUT) IMAGEGEN=$(IMAGEGEN) IMAGEGEN_CACHE=$(IMAGEGEN_CACHE) imagegen/scripts/bench-boot.sh

## bench-imagegen: cold build (empty cache), warm rebuild, initramfs sizes,
## and mmdebstrap extracting the same package set as the reference; prints a
## table and writes bench/results/imagegen.json.
bench-imagegen: deps build
	@mkdir -p bench/results
	OUT=$(OUT) IMAGEGEN=$(IMAGEGEN) imagegen/scripts/bench.sh

## disk images (owner: imagegen/crates/disk): `make disk-image` turns the
## built master and worker into disk.raw (GPT, UEFI via systemd-boot + BIOS
## via syslinux), disk.qcow2/.vmdk/.vdi/.vhd and aws-import.json in
## $(OUT)/<role>/ with `imagegen disk` (the same code as `imagegen build
## --format ...`, without rebuilding the initramfs). test-disk: crate tests, QEMU boots (OVMF,
## SeaBIOS, qcow2/vmdk/vdi, data partition grown to 4 GiB and kept across a
## reboot; ~5-8 min) and the bit-identical rebuild of every disk format.
## Boot loaders come from the host: systemd-boot-efi (UEFI), syslinux +
## syslinux-common (BIOS, installer + gptmbr.bin), mtools (syslinux's
## installer writes the FAT through it).
APT_PACKAGES += systemd-boot-efi syslinux syslinux-common mtools bc
# qemu-tests/tests/smoke.rs: the CRI test image is an OCI archive of the
# static busybox (qemu_tests::oci).
APT_PACKAGES += busybox-static
DISK_FORMATS ?= raw,qcow2,vmdk,vdi,vhd,aws
.PHONY: disk-image test-disk test-disk-reproducible bench-disk

disk-image: image
	@for p in master worker; do $(IMAGEGEN) disk $(OUT)/$$p --format $(DISK_FORMATS) || exit 1; done

test-disk-reproducible: disk-image
	@rm -rf $(OUT)/disk-repro
	$(IMAGEGEN) disk $(OUT)/master --format $(DISK_FORMATS) --out $(OUT)/disk-repro
	@for f in disk.raw disk.qcow2 disk.vmdk disk.vdi disk.vhd aws-import.json; do \
		a=$$(sha256sum < $(OUT)/master/$$f | cut -d' ' -f1); b=$$(sha256sum < $(OUT)/disk-repro/$$f | cut -d' ' -f1); \
		if [ "$$a" != "$$b" ]; then echo "reproducibility: $$f differs: $$a vs $$b" >&2; exit 1; fi; \
		echo "reproducible: $$f $$a"; \
	done
	@rm -rf $(OUT)/disk-repro

test-disk: deps disk-image test-disk-reproducible
	$(CARGO) test -p disk
	KUBEBOOT_IMAGES=$(OUT) $(CARGO) test -p qemu-tests --test disk

# `cargo test --workspace` runs qemu-tests/tests/disk.rs: it needs the disk images.
unit: disk-image
test: test-disk-reproducible

## bench-disk: raw size, zstd size, per-format sizes and the time to build
## all disk formats from a built image; writes bench/results/disk.json.
bench-disk: deps disk-image
	@mkdir -p bench/results
	OUT=$(OUT) IMAGEGEN=$(IMAGEGEN) imagegen/crates/disk/scripts/bench.sh
