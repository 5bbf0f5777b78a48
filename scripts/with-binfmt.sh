#!/usr/bin/env bash
# with-binfmt.sh COMMAND...: run COMMAND with binfmt_misc knowing qemu-arm
# and qemu-aarch64, so that foreign binaries run under qemu-user (the arm
# tests of `make test-arm`, the maintainer scripts of the emulated Pi's
# arm64 base image). What was missing is registered (binfmt_misc mounted if
# need be) and exactly that is undone on exit, so the machine is left as it
# was found.
set -euo pipefail

binfmt=/proc/sys/fs/binfmt_misc
mounted_binfmt=
registered=()
restore_binfmt() {
	for name in "${registered[@]}"; do
		echo -1 >"$binfmt/$name" || echo "with-binfmt: could not unregister $name from binfmt_misc" >&2
	done
	if [ -n "$mounted_binfmt" ]; then
		umount "$binfmt" || echo "with-binfmt: could not unmount $binfmt" >&2
	fi
}
trap restore_binfmt EXIT

if [ ! -e "$binfmt/register" ]; then
	mount -t binfmt_misc binfmt_misc "$binfmt"
	mounted_binfmt=1
fi
for name in qemu-arm qemu-aarch64; do
	[ -e "$binfmt/$name" ] && continue
	conf=/usr/lib/binfmt.d/$name.conf
	[ -r "$conf" ] || { echo "with-binfmt: $conf not found (apt-get install qemu-user-static)" >&2; exit 1; }
	cat "$conf" >"$binfmt/register"
	registered+=("$name")
done
"$@"
