package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// BuildOptions say how to build an SD-card image from a base image.
type BuildOptions struct {
	Options
	// Base is the Raspberry Pi OS image (.img, or .img.xz); never modified.
	Base string
	// Out is the image to write; it appears only when everything succeeded.
	Out string
	// Progress receives progress lines for long steps; nil is silent.
	Progress io.Writer
}

// BuildResult says what Build wrote.
type BuildResult struct {
	*Report
	Out    string
	Size   int64
	Layout Layout
}

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// Build copies o.Base (decompressing .xz) to a temporary file next to
// o.Out, customises its root and boot partitions in place with Customize,
// and renames it to o.Out. On any error the temporary file is removed and
// nothing is left behind. The base image is only read.
func Build(ctx context.Context, o BuildOptions) (res *BuildResult, err error) {
	if _, err := o.Options.withDefaults(); err != nil {
		return nil, err
	}
	if len(o.AuthorizedKeys) == 0 {
		return nil, errors.New("build: an SSH public key is required (--ssh-key): the image has no password login")
	}
	if o.Base == "" || o.Out == "" {
		return nil, errors.New("build: both a base image (--base) and an output file (--out) are required")
	}
	baseInfo, err := os.Stat(o.Base)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	if outInfo, err := os.Stat(o.Out); err == nil && os.SameFile(baseInfo, outInfo) {
		return nil, fmt.Errorf("build: --out %s is the base image; the base is never modified, pick another output file", o.Out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), "."+filepath.Base(o.Out)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("build: create output next to %s: %w", o.Out, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()

	size, err := copyBase(ctx, tmp, o.Base, baseInfo.Size(), o.Progress)
	if err != nil {
		return nil, err
	}
	layout, err := ReadLayout(tmp, size, o.Base)
	if err != nil {
		return nil, err
	}
	progress(o.Progress, "customising: boot partition at %s, root partition at %s (%s)", byteSize(layout.Boot.Offset), byteSize(layout.Root.Offset), byteSize(layout.Root.Size))
	root, err := OpenExt4(tmpName, layout.Root.Offset)
	if err != nil {
		return nil, err
	}
	boot, err := OpenFAT(tmpName, layout.Boot.Offset)
	if err != nil {
		root.Close()
		return nil, err
	}
	report, err := Customize(root, boot, o.Options)
	if cerr := root.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", o.Out, err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("build: sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("build: close %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, o.Out); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	syncDir(filepath.Dir(o.Out))
	return &BuildResult{Report: report, Out: o.Out, Size: size, Layout: layout}, nil
}

// copyBase copies (and decompresses) the base image into dst, keeping runs
// of zeros as holes, and returns the image size.
func copyBase(ctx context.Context, dst *os.File, base string, baseSize int64, w io.Writer) (int64, error) {
	src, err := os.Open(base)
	if err != nil {
		return 0, fmt.Errorf("base image: %w", err)
	}
	defer src.Close()
	head := make([]byte, len(xzMagic))
	n, _ := io.ReadFull(src, head)
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("base image %s: %w", base, err)
	}
	if bytes.HasPrefix(head[:n], []byte("PK\x03\x04")) {
		return 0, fmt.Errorf("base image %s is a zip archive: unzip it first and give the .img inside", base)
	}
	read := &countingReader{r: src, ctx: ctx}
	if !bytes.Equal(head[:n], xzMagic) {
		p := newProgress(w, "copying base image", baseSize, read.n.Load)
		defer p.stop()
		size, err := sparseCopy(dst, read)
		if err != nil {
			return 0, fmt.Errorf("copy base image %s: %w", base, err)
		}
		return size, nil
	}
	if _, err := exec.LookPath("xz"); err != nil {
		return 0, fmt.Errorf("base image %s is xz-compressed and xz is not installed: install xz-utils or decompress it first", base)
	}
	cmd := exec.CommandContext(ctx, "xz", "--decompress", "--stdout")
	cmd.Stdin = read
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("decompress base image: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("decompress base image: %w", err)
	}
	p := newProgress(w, "decompressing base image", baseSize, read.n.Load)
	size, copyErr := sparseCopy(dst, out)
	if copyErr != nil {
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	p.stop()
	if copyErr != nil {
		return 0, fmt.Errorf("decompress base image %s: %w", base, copyErr)
	}
	if waitErr != nil {
		return 0, fmt.Errorf("decompress base image %s: %s (truncated or corrupt download?)", base, strings.TrimSpace(strings.ReplaceAll(stderr.String(), "xz: (stdin): ", "")))
	}
	return size, nil
}

// sparseCopy copies src to dst, seeking over blocks of zeros so that the
// copy of a mostly empty image stays small on disk.
func sparseCopy(dst *os.File, src io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	var total int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if bytes.Equal(buf[:n], zero[:n]) {
				if _, err := dst.Seek(int64(n), io.SeekCurrent); err != nil {
					return total, err
				}
			} else if _, err := dst.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return total, err
		}
	}
	if err := dst.Truncate(total); err != nil {
		return total, err
	}
	return total, nil
}

// countingReader counts bytes read and stops when ctx is done.
type countingReader struct {
	r   io.Reader
	ctx context.Context
	n   atomic.Int64 // read by the progress reporter
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progressReporter prints a progress line every few seconds until stopped.
type progressReporter struct {
	done    chan struct{}
	stopped chan struct{}
}

func newProgress(w io.Writer, what string, total int64, cur func() int64) *progressReporter {
	p := &progressReporter{done: make(chan struct{}), stopped: make(chan struct{})}
	if w == nil {
		close(p.stopped)
		return p
	}
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-p.done:
				fmt.Fprintf(w, "%s: %s done in %s\n", what, byteSize(total), time.Since(start).Round(100*time.Millisecond))
				return
			case <-t.C:
				n := cur()
				pct := 0.0
				if total > 0 {
					pct = 100 * float64(n) / float64(total)
				}
				fmt.Fprintf(w, "%s: %s of %s (%.0f%%)\n", what, byteSize(n), byteSize(total), pct)
			}
		}
	}()
	return p
}

// stop ends the reporter and waits for its goroutine; safe to call twice.
func (p *progressReporter) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	<-p.stopped
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// byteSize formats n bytes for people.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// ResetImage clears the identity of the node an existing image file came
// from (see ResetIdentity), in place: it is meant for an image read back
// from a card that has already booted.
func ResetImage(img string) (*Report, error) {
	f, err := os.Open(img)
	if err != nil {
		return nil, fmt.Errorf("reset identity: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reset identity: %w", err)
	}
	layout, err := ReadLayout(f, info.Size(), img)
	f.Close()
	if err != nil {
		return nil, err
	}
	root, err := OpenExt4(img, layout.Root.Offset)
	if err != nil {
		return nil, err
	}
	r := &Report{}
	err = ResetIdentity(root, r)
	if cerr := root.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("reset identity of %s: %w", img, err)
	}
	return r, nil
}
