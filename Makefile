# rpi-cluster — build, test and run.
#
#   make build        binaries for this machine into bin/ (and make docs)
#   make docs         man pages and bash/zsh completion of every CLI into dist/
#   make cross        rpi-agent for every Pi: bin/linux-{arm64,armv7,armv6}/rpi-agent
#   make test         unit and in-process cluster tests (go test -race ./...)
#   make test-arm     the agent's tests on arm (GOARM=6) and arm64 under qemu-user
#                     (binfmt_misc must know qemu-arm and qemu-aarch64: .ci/run does it)
#   make check        everything CI runs: lint, tests, end-to-end suite
#   make cluster      the virtual Pi cluster on Docker (N=4 nodes) with a deploy on it
#   make cluster-down remove everything make cluster made
#   make e2e          the end-to-end suite on virtual clusters (root, Docker)
#   make test-emulated the SD image built by rpi-image, written to three cards
#                     and booted in qemu-system-aarch64 with DHCP (root)
#   make bench        failure detection, convergence, bandwidth, footprint (docs/PERFORMANCE.md)
#   make bench-quick  a reduced benchmark run; fails only on gross failures, never on timings
#   make demo         a local 3-agent cluster on 127.0.2.x (no Docker needed)

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/rpi-cluster/rpi-cluster/internal/version.Version=$(VERSION)
# urfave/cli's man page and markdown generators are never used by the
# binaries; leaving them out drops blackfriday and go-md2man from every binary
# (smaller, faster start). Only internal/gendocs (make docs) builds with them.
TAGS     := urfave_cli_no_docs

export CGO_ENABLED := 0

N ?= 4

.PHONY: all build docs cross test test-arm lint deps check demo cluster cluster-down e2e test-emulated bench bench-quick clean

all: build

build: docs
	@mkdir -p bin
	@for b in $$(ls -d */cmd/* 2>/dev/null); do \
		name=$$(basename $$b); \
		echo "go build $$name"; \
		$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/$$name ./$$b || exit 1; \
	done
	@mkdir -p bin/linux-amd64 && if [ "$$($(GO) env GOARCH)" = amd64 ]; then cp bin/rpi-agent bin/linux-amd64/rpi-agent; fi

# Generated from the apps' flags; a test (internal/gendocs) fails when the
# committed dist/ differs from what this writes.
docs:
	$(GO) run ./internal/gendocs -o dist

# Pi Zero/1 are ARMv6, Pi 2/3 (32-bit OS) ARMv7, Pi 3/4/5 with a 64-bit OS arm64.
cross:
	GOOS=linux GOARCH=arm64         $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/linux-arm64/rpi-agent ./agent/cmd/rpi-agent
	GOOS=linux GOARCH=arm GOARM=7   $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/linux-armv7/rpi-agent ./agent/cmd/rpi-agent
	GOOS=linux GOARCH=arm GOARM=6   $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/linux-armv6/rpi-agent ./agent/cmd/rpi-agent
	GOOS=linux GOARCH=amd64         $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/linux-amd64/rpi-agent ./agent/cmd/rpi-agent

test:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=linux GOARCH=arm GOARM=6 $(GO) vet ./agent/...

# The Pis' architectures: arm with GOARM=6 is the Pi Zero/1 (32-bit atomics
# need 64-bit alignment there), arm64 the Pi 3/4/5. No race detector under
# emulation. Left out there, and run natively by `make test`: the mDNS tests
# (qemu-user 7.2 answers MCAST_JOIN_GROUP with ENOPROTOOPT, so no multicast
# group can be joined; seen with QEMU_STRACE=1) and the HTTP exhaustion test,
# whose 1 s latency bound measures the emulator, not the agent. One package
# at a time (-p 1): emulated, the cluster tests' timing profile leaves no room
# for another package's tests on the same two cores. -short leaves out the
# integration tests that exercise the host rather than the architecture (real
# browsers, Prometheus, namespaces, the 2,000-member churn).
ARM_TEST_PKGS ?= ./agent/...
ARM_TEST_SKIP ?= ^(TestAgentsFindEachOtherOverMDNS|TestMDNSBetweenNamespaces|TestMDNSSurvivesRelink|TestHTTPExhaustion)$$
test-arm:
	@for f in qemu-arm qemu-aarch64; do [ -e /proc/sys/fs/binfmt_misc/$$f ] || { \
		echo "binfmt_misc has no $$f: run scripts/with-binfmt.sh make test-arm (apt-get install qemu-user-static)"; exit 1; }; done
	GOOS=linux GOARCH=arm GOARM=6 $(GO) test -short -p 1 -count=1 -timeout 15m -skip '$(ARM_TEST_SKIP)' $(ARM_TEST_PKGS)
	GOOS=linux GOARCH=arm64       $(GO) test -short -p 1 -count=1 -timeout 15m -skip '$(ARM_TEST_SKIP)' $(ARM_TEST_PKGS)

# Debian packages the full test run needs (installed by `make deps`, as root).
TEST_DEPS := debootstrap ansible-core ansible-lint chromium mtools dosfstools fdisk e2fsprogs \
	xz-utils iproute2 openssh-client curl systemd lxcfs prometheus qemu-user-static zsh \
	qemu-system-arm mmdebstrap arch-test dnsmasq-base util-linux

deps:
	./scripts/deps.sh $(TEST_DEPS)

check: deps lint cross test e2e test-emulated bench-quick

cluster: build
	N=$(N) ./scripts/cluster.sh

cluster-down:
	$(GO) run ./e2e/cmd/rpi-vcluster down

e2e: build
	./e2e/run.sh

# The emulated boot (e2e/qemu): builds the Pi-shaped arm64 base image once
# (cached in $RPI_CACHE_DIR), then boots three cards of one rpi-image build
# in a network namespace of its own.
test-emulated: build cross
	./e2e/qemu/run.sh

demo: build
	./scripts/local-cluster.sh

bench: build
	$(GO) run ./bench/cmd/rpi-bench -o build/bench-results.md

# Every row, shorter (about 5 minutes): in-process at N = 10 and 100 (failure
# detection at N = 10 only), agent processes and the false-positive run at
# N = 10.
bench-quick: build
	$(GO) run ./bench/cmd/rpi-bench --quick -o build/bench-quick.md

clean:
	rm -rf bin build
