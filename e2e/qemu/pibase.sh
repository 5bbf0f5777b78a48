#!/bin/sh
# pibase.sh: build a Raspberry-Pi-shaped arm64 disk image from Debian's arm64
# packages, the base that `rpi-image build` customises in the emulated boot.
#
#   pibase.sh MIRROR SUITE OUT.img PACKAGE...
#
# The card is laid out as Raspberry Pi OS lays out its images: an MBR disk
# with partition 1 a FAT boot partition (kernel, initrd, cmdline.txt with
# root=PARTUUID=<disk id>-02, config.txt) and partition 2 an ext4 root. It
# is written without loop devices or mounts: mmdebstrap into a directory,
# mke2fs -d for the root, mkfs.vfat + mtools for the boot partition, sfdisk
# and dd into one file. Needs root, mmdebstrap, and binfmt_misc registered
# for qemu-aarch64 (the packages' maintainer scripts run emulated).
set -eu
LC_ALL=C
export LC_ALL

mirror=$1 suite=$2 out=$3
shift 3
packages=$(echo "$@" | tr ' ' ',')

work=$(mktemp -d "${out%/*}/pibase-work-XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# The first boot of every card makes its own identity; the base must not
# carry one (rpi-image resets it again anyway).
# initramfs-tools: the default MODULES=most never finished under emulation;
# the virt machine needs only virtio and ext4. Set before the kernel's
# postinst makes the initramfs, in files no package owns (conf.d and
# modules.d), so dpkg has no conffile to ask about.
mmdebstrap --architectures=arm64 --variant=minbase --include="$packages" \
	--essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"; printf "MODULES=list\nCOMPRESS=gzip\n" >"$1/etc/initramfs-tools/conf.d/emulated-pi.conf"; printf "virtio_pci\nvirtio_mmio\nvirtio_blk\nvirtio_net\nvirtio_rng\next4\ncrc32c_generic\n" >"$1/usr/share/initramfs-tools/modules.d/emulated-pi"' \
	--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
	"$suite" "$root" "$mirror"

# --- what a Raspberry Pi OS image looks like from the inside ---------------
echo raspberrypi >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' >"$root/etc/hosts"
: >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
cat >"$root/etc/fstab" <<FSTAB
# Raspberry Pi OS mounts the boot partition at /boot/firmware.
PARTUUID=DISKID-01  /boot/firmware  vfat  defaults,noatime  0  2
PARTUUID=DISKID-02  /               ext4  defaults,noatime  0  1
FSTAB
mkdir -p "$root/boot/firmware"
# DHCP by systemd-networkd: part of systemd already, so no extra daemon;
# `networkctl renew` renews a lease on demand. The client id is the MAC, as
# dhcpcd and NetworkManager on Raspberry Pi OS send it, so a DHCP server's
# reservation by MAC applies however the machine-id changes.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-eth.network" <<NET
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
NET
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$root/etc/systemd/system/network-online.target.wants" "$root/etc/systemd/system/sockets.target.wants"
ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$root/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"
ln -sf /lib/systemd/system/systemd-networkd.socket "$root/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
# systemd-firstboot would prompt on the console for a locale and a root
# password on a card's first boot; Raspberry Pi OS does not run it either.
ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
# A serial console, the emulated board's only screen.
ln -sf /lib/systemd/system/serial-getty@.service "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyAMA0.service" 2>/dev/null || true

# --- the disk ---------------------------------------------------------------
disk_id=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
sed -i "s/DISKID/$disk_id/" "$root/etc/fstab"
boot=$work/boot
mkdir -p "$boot"
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
cp "$kernel" "$boot/vmlinuz"
cp "$initrd" "$boot/initrd.img"
echo "console=ttyAMA0 root=PARTUUID=$disk_id-02 rootfstype=ext4 rootwait fsck.repair=yes net.ifnames=0" >"$boot/cmdline.txt"
cat >"$boot/config.txt" <<CONFIG
# Read by the Raspberry Pi firmware (and by the emulated boot, which loads
# what it names from this partition as the firmware would).
arm_64bit=1
kernel=vmlinuz
initramfs initrd.img followkernel
CONFIG

boot_mb=128
root_mb=$(( $(du -sm "$root" | cut -f1) * 13 / 10 + 512 ))
mkfs.vfat -C -F 32 -n bootfs "$work/boot.part" $((boot_mb * 1024)) >/dev/null
mcopy -s -i "$work/boot.part" "$boot"/* ::/
mke2fs -q -t ext4 -L rootfs -d "$root" "$work/root.part" "${root_mb}M"

img=$work/disk.img
truncate -s $(( (4 + boot_mb + root_mb) * 1024 * 1024 )) "$img"
sfdisk --quiet "$img" <<PART
label: dos
label-id: 0x$disk_id
start=4MiB, size=${boot_mb}MiB, type=c
start=$((4 + boot_mb))MiB, size=${root_mb}MiB, type=83
PART
dd if="$work/boot.part" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$work/root.part" of="$img" bs=1M seek=$((4 + boot_mb)) conv=notrunc,sparse status=none
mv "$img" "$out"
