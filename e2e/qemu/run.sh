#!/usr/bin/env bash
# e2e/qemu/run.sh: the emulated boot of the SD image (TestEmulatedCards).
# Builds the Pi-shaped arm64 base image once (cached in $RPI_CACHE_DIR, else
# ~/.cache/rpi-cluster; binfmt_misc is given qemu-aarch64 for the build and
# left as found), then runs the scenario in a network namespace of its own
# (unshare --net): the cards' LAN, its DHCP server, mDNS and gossip exist
# only there. Needs root, qemu-system-arm, mmdebstrap, dnsmasq-base,
# qemu-user-static, ansible-core, and `make build cross` done.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in qemu-system-aarch64 mmdebstrap dnsmasq unshare ansible; do
	command -v "$tool" >/dev/null || { echo "e2e/qemu/run.sh: $tool not found (make deps)" >&2; exit 1; }
done
[ -x bin/rpi-image ] && [ -x bin/linux-arm64/rpi-agent ] || { echo "e2e/qemu/run.sh: run make build cross first" >&2; exit 1; }
mkdir -p build
start=$(date +%s)
base=$(scripts/with-binfmt.sh go run ./e2e/cmd/rpi-vcluster pi-base)
echo "pi base image: $base ($(( $(date +%s) - start )) s)"
go test -tags e2e -c -o build/qemu-e2e.test ./e2e/qemu
set +e
unshare --net -- env RPI_PI_BASE="$base" RPI_BIN="$PWD/bin" \
	build/qemu-e2e.test -test.v -test.count=1 -test.timeout 30m ${RPI_E2E_RUN:+-test.run "$RPI_E2E_RUN"} 2>&1 | tee build/e2e-emulated.log
status=${PIPESTATUS[0]}
exit "$status"
