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

lxcfs_pid=
# unmount_lxcfs detaches /var/lib/lxcfs, live or dead. A lazy unmount also
# clears the mount an lxcfs left behind when it was killed, which otherwise
# fails every access with "Transport endpoint is not connected".
unmount_lxcfs() {
	fusermount3 -uz /var/lib/lxcfs 2>/dev/null || fusermount -uz /var/lib/lxcfs 2>/dev/null ||
		umount -l /var/lib/lxcfs 2>/dev/null || true
}
cleanup() {
	status=$?
	if [ "${RPI_E2E_KEEP:-}" != 1 ]; then
		go run ./e2e/cmd/rpi-vcluster down --session "$RPI_E2E_SESSION" || true
	fi
	# A kept cluster still reads its /proc files from lxcfs.
	if [ -n "$lxcfs_pid" ] && [ "${RPI_E2E_KEEP:-}" != 1 ]; then
		kill "$lxcfs_pid" 2>/dev/null || true
		wait "$lxcfs_pid" 2>/dev/null || true
		unmount_lxcfs
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in docker debootstrap ansible; do
	command -v "$tool" >/dev/null || { echo "e2e/run.sh: $tool not found (apt-get install docker.io debootstrap ansible-core)" >&2; exit 1; }
done

# Containers share the host's kernel, so without lxcfs every node reads the
# host's /proc/loadavg and least-busy placement cannot tell nodes apart. lxcfs
# gives each container its own load, CPU and memory figures, as each Pi has.
if grep -q ' /var/lib/lxcfs ' /proc/self/mounts && ! stat /var/lib/lxcfs >/dev/null 2>&1; then
	echo "e2e/run.sh: /var/lib/lxcfs is the mount of an lxcfs that died; unmounting it" >&2
	unmount_lxcfs
fi
if [ ! -s /var/lib/lxcfs/proc/loadavg ] && command -v lxcfs >/dev/null; then
	mkdir -p /var/lib/lxcfs build
	lxcfs -l /var/lib/lxcfs >build/lxcfs.log 2>&1 &
	lxcfs_pid=$!
	for _ in $(seq 1 100); do
		[ -s /var/lib/lxcfs/proc/loadavg ] && break
		kill -0 "$lxcfs_pid" 2>/dev/null || break
		sleep 0.1
	done
fi
if [ -s /var/lib/lxcfs/proc/loadavg ]; then
	export RPI_E2E_LXCFS=required
else
	echo "e2e/run.sh: lxcfs not running: nodes share the host's load figures (apt-get install lxcfs)" >&2
fi

make build
mkdir -p build
go test -tags e2e -count=1 -v -timeout 40m ${RPI_E2E_RUN:+-run "$RPI_E2E_RUN"} ./e2e/ 2>&1 | tee build/e2e.log
status=${PIPESTATUS[0]}
echo "figures: build/e2e-results.md"
exit "$status"
