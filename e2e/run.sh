#!/usr/bin/env bash
# e2e/run.sh: build the binaries, run the end-to-end suite on the virtual
# Raspberry Pi cluster, and always remove what the suite created (containers,
# volumes, networks labelled rpi-cluster.e2e), even when a test fails or the
# run is interrupted. The node image is kept: it is the cache.
#
# Needs root, Docker, debootstrap and ansible-core (.ci/run installs them).
#   RPI_E2E_RUN=REGEX            run only matching tests (go test -run)
#   RPI_E2E_LOSS_DURATION=30s    shorten the packet-loss test (default 2m)
#   RPI_E2E_KEEP=1               keep a failed test's cluster (cleanup skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

# Every cluster of this run carries this session label; cleanup removes
# exactly those, not a `make cluster` or another job's run.
export RPI_E2E_SESSION=${RPI_E2E_SESSION:-ci-$$-$(date +%s)}

cleanup() {
	status=$?
	if [ "${RPI_E2E_KEEP:-}" != 1 ]; then
		go run ./e2e/cmd/rpi-vcluster down --session "$RPI_E2E_SESSION" || true
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in docker debootstrap ansible; do
	command -v "$tool" >/dev/null || { echo "e2e/run.sh: $tool not found (apt-get install docker.io debootstrap ansible-core)" >&2; exit 1; }
done

make build
mkdir -p build
go test -tags e2e -count=1 -v -timeout 40m ${RPI_E2E_RUN:+-run "$RPI_E2E_RUN"} ./e2e/ 2>&1 | tee build/e2e.log
status=${PIPESTATUS[0]}
echo "figures: build/e2e-results.md"
exit "$status"
