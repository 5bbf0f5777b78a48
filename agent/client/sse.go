package client

import (
	"bufio"
	"io"
	"strings"
)

// lineReader reads lines of an event stream, bounded to 1 MiB per line.
type lineReader struct{ s *bufio.Scanner }

func newLineReader(r io.Reader) *lineReader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	return &lineReader{s: s}
}

// ReadLine returns the next line without its terminator, or io.EOF.
func (l *lineReader) ReadLine() (string, error) {
	if l.s.Scan() {
		return strings.TrimSuffix(l.s.Text(), "\r"), nil
	}
	if err := l.s.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}
