package image

import (
	"encoding/binary"
	"fmt"
	"io"
)

const sectorSize = 512

// Partition is one primary partition of an MBR partition table.
type Partition struct {
	// Number is 1..4.
	Number int
	// Type is the MBR partition type byte (0x0c FAT32 LBA, 0x83 Linux...).
	Type byte
	// Offset and Size are in bytes.
	Offset int64
	Size   int64
}

// Layout is where a Raspberry Pi OS image keeps its filesystems.
type Layout struct {
	Boot Partition // partition 1, FAT
	Root Partition // partition 2, ext4
}

// fatTypes are the MBR types of FAT partitions.
var fatTypes = map[byte]bool{0x01: true, 0x04: true, 0x06: true, 0x0b: true, 0x0c: true, 0x0e: true}

// ReadLayout reads the MBR partition table of the image r (size bytes long,
// called name in errors) and checks it has the Raspberry Pi OS layout:
// partition 1 FAT, partition 2 Linux, both inside the file and holding the
// filesystems they claim to.
func ReadLayout(r io.ReaderAt, size int64, name string) (Layout, error) {
	mbr := make([]byte, sectorSize)
	if size < sectorSize {
		return Layout{}, fmt.Errorf("image %s: %d bytes is too small to hold a partition table (truncated download?)", name, size)
	}
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return Layout{}, fmt.Errorf("image %s: read partition table: %w", name, err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return Layout{}, fmt.Errorf("image %s: no MBR partition table (expected a Raspberry Pi OS disk image, .img or .img.xz)", name)
	}
	var parts [4]Partition
	for i := range parts {
		e := mbr[446+16*i : 446+16*(i+1)]
		parts[i] = Partition{
			Number: i + 1,
			Type:   e[4],
			Offset: int64(binary.LittleEndian.Uint32(e[8:12])) * sectorSize,
			Size:   int64(binary.LittleEndian.Uint32(e[12:16])) * sectorSize,
		}
		if parts[i].Type == 0xee {
			return Layout{}, fmt.Errorf("image %s: GPT partition table is not supported (Raspberry Pi OS images use MBR)", name)
		}
	}
	l := Layout{Boot: parts[0], Root: parts[1]}
	if l.Boot.Size == 0 || !fatTypes[l.Boot.Type] {
		return Layout{}, fmt.Errorf("image %s: partition 1 should be the FAT boot partition, found type 0x%02x", name, l.Boot.Type)
	}
	if l.Root.Size == 0 || l.Root.Type != 0x83 {
		return Layout{}, fmt.Errorf("image %s: partition 2 should be the Linux root partition (type 0x83), found type 0x%02x", name, l.Root.Type)
	}
	for _, p := range []Partition{l.Boot, l.Root} {
		if p.Offset+p.Size > size {
			return Layout{}, fmt.Errorf("image %s: partition %d extends beyond the end of the file (truncated download?)", name, p.Number)
		}
	}
	if l.Boot.Offset < l.Root.Offset+l.Root.Size && l.Root.Offset < l.Boot.Offset+l.Boot.Size {
		return Layout{}, fmt.Errorf("image %s: partitions 1 and 2 overlap (corrupt partition table)", name)
	}
	boot := make([]byte, sectorSize)
	if _, err := r.ReadAt(boot, l.Boot.Offset); err != nil {
		return Layout{}, fmt.Errorf("image %s: read partition 1: %w", name, err)
	}
	if boot[510] != 0x55 || boot[511] != 0xaa {
		return Layout{}, fmt.Errorf("image %s: partition 1 holds no FAT filesystem (corrupt image?)", name)
	}
	magic := make([]byte, 2)
	if _, err := r.ReadAt(magic, l.Root.Offset+1024+56); err != nil {
		return Layout{}, fmt.Errorf("image %s: read partition 2: %w", name, err)
	}
	if binary.LittleEndian.Uint16(magic) != 0xef53 {
		return Layout{}, fmt.Errorf("image %s: partition 2 holds no ext4 filesystem (corrupt image?)", name)
	}
	return l, nil
}
