package image

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// Architectures of the rpi-agent builds (`make cross` puts each in
// bin/linux-<arch>/rpi-agent).
const (
	ArchARM64 = "arm64"
	ArchARMv7 = "armv7"
	ArchARMv6 = "armv6"
	ArchAMD64 = "amd64"
)

// archProbes are binaries every Debian-based root filesystem has; the
// first one found tells the architecture.
var archProbes = []string{"/usr/bin/dpkg", "/bin/sh", "/usr/bin/env", "/bin/ls", "/bin/busybox"}

// DetectArch reports the architecture of the root filesystem fsys from an
// ELF binary inside it, and which binary told.
func DetectArch(fsys FS) (arch, probe string, err error) {
	for _, p := range archProbes {
		data, err := fsys.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("detect architecture: %w", err)
		}
		arch, err := ELFArch(data)
		if err != nil {
			return "", "", fmt.Errorf("detect architecture from %s: %w", p, err)
		}
		return arch, p, nil
	}
	return "", "", fmt.Errorf("detect architecture: none of %s found in the root filesystem (is it a Linux root filesystem?)", strings.Join(archProbes, ", "))
}

// ELFArch returns the rpi-agent architecture an ELF binary runs on:
// arm64, amd64, or for 32-bit ARM armv6 or armv7 from the Tag_CPU_arch
// build attribute (Raspberry Pi OS's 32-bit userland is ARMv6, so it runs
// on every Pi; no attribute means armv7, Debian armhf's baseline).
func ELFArch(data []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("not an ELF binary: %w", err)
	}
	switch f.Machine {
	case elf.EM_AARCH64:
		return ArchARM64, nil
	case elf.EM_X86_64:
		return ArchAMD64, nil
	case elf.EM_ARM:
		if s := f.Section(".ARM.attributes"); s != nil {
			attrs, err := s.Data()
			if err == nil {
				if v, ok := armCPUArch(attrs); ok && v <= 9 {
					return ArchARMv6, nil
				}
			}
		}
		return ArchARMv7, nil
	default:
		return "", fmt.Errorf("unsupported machine %v (rpi-agent is built for arm64, armv7, armv6 and amd64)", f.Machine)
	}
}

// Tag values of the ARM EABI "aeabi" attributes used below.
const (
	tagFile        = 1
	tagCPURawName  = 4
	tagCPUName     = 5
	tagCPUArch     = 6
	tagCompat      = 32
	tagAlsoCompat  = 65
	tagConformance = 67
)

// armCPUArch finds Tag_CPU_arch in the content of an .ARM.attributes
// section (ARM IHI 0045: 'A', then subsections "length vendor\0 data";
// the aeabi file-scope data is a list of ULEB128 tags with ULEB128 or
// NUL-terminated string values). Values: 6 v6, 7 v6KZ, 9 v6K, 10 v7, 14 v8.
func armCPUArch(b []byte) (uint64, bool) {
	if len(b) < 1 || b[0] != 'A' {
		return 0, false
	}
	b = b[1:]
	for len(b) >= 4 {
		n := int(binary.LittleEndian.Uint32(b))
		if n < 4 || n > len(b) {
			return 0, false
		}
		sub := b[4:n]
		b = b[n:]
		vendor, rest, ok := bytes.Cut(sub, []byte{0})
		if !ok || string(vendor) != "aeabi" {
			continue
		}
		for len(rest) > 0 {
			tag, k := uleb(rest)
			if k == 0 || len(rest) < k+4 {
				return 0, false
			}
			size := int(binary.LittleEndian.Uint32(rest[k:]))
			if size < k+4 || size > len(rest) {
				return 0, false
			}
			data := rest[k+4 : size]
			rest = rest[size:]
			if tag != tagFile {
				continue
			}
			for len(data) > 0 {
				t, k := uleb(data)
				if k == 0 {
					return 0, false
				}
				data = data[k:]
				switch {
				case t == tagCPURawName || t == tagCPUName || t == tagAlsoCompat || t == tagConformance || (t > tagCompat && t%2 == 1):
					_, after, ok := bytes.Cut(data, []byte{0})
					if !ok {
						return 0, false
					}
					data = after
				case t == tagCompat:
					_, k := uleb(data)
					_, after, ok := bytes.Cut(data[k:], []byte{0})
					if k == 0 || !ok {
						return 0, false
					}
					data = after
				default:
					v, k := uleb(data)
					if k == 0 {
						return 0, false
					}
					if t == tagCPUArch {
						return v, true
					}
					data = data[k:]
				}
			}
		}
	}
	return 0, false
}

// uleb decodes an unsigned LEB128 number; k is 0 when b holds none.
func uleb(b []byte) (v uint64, k int) {
	var shift uint
	for i, c := range b {
		if i >= 10 {
			return 0, 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, i + 1
		}
		shift += 7
	}
	return 0, 0
}

// machineOf is the ELF machine an architecture's binaries carry.
func machineOf(arch string) elf.Machine {
	switch arch {
	case ArchARM64:
		return elf.EM_AARCH64
	case ArchAMD64:
		return elf.EM_X86_64
	default:
		return elf.EM_ARM
	}
}
