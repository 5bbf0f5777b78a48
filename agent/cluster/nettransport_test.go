package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Transport tests use 127.0.1.150-169.

func newNetTransport(t testing.TB, ip string) *NetTransport {
	t.Helper()
	nt, err := NewNetTransport(ip, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nt.Shutdown() })
	return nt
}

func recvPacket(t *testing.T, tr memberlist.Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5 s")
		return nil
	}
}

// Each packet arrives in a buffer of its own, exactly its size, so packets
// memberlist still holds are not overwritten by the next read; the sender's
// address and the receive time come with it.
func TestNetTransportPackets(t *testing.T) {
	a := newNetTransport(t, "127.0.1.150")
	b := newNetTransport(t, "127.0.1.151")
	to := fmt.Sprintf("127.0.1.151:%d", b.Port())

	sizes := []int{1, 60, 1400, 65507}
	for i, n := range sizes {
		if _, err := a.WriteTo(bytes.Repeat([]byte{byte('a' + i)}, n), to); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
	}
	var got []*memberlist.Packet
	before := time.Now()
	for range sizes {
		got = append(got, recvPacket(t, b))
	}
	for i, p := range got {
		want := bytes.Repeat([]byte{byte('a' + i)}, sizes[i])
		if !bytes.Equal(p.Buf, want) {
			t.Errorf("packet %d: got %d bytes starting %q, want %d bytes of %q", i, len(p.Buf), p.Buf[:min(len(p.Buf), 8)], sizes[i], want[0])
		}
		if cap(p.Buf) > len(p.Buf)+len(p.Buf)/8+16 { // size classes round up
			t.Errorf("packet %d: %d bytes held in a buffer of %d", i, len(p.Buf), cap(p.Buf))
		}
		if from := p.From.String(); from != fmt.Sprintf("127.0.1.150:%d", a.Port()) {
			t.Errorf("packet %d from %s, want 127.0.1.150:%d", i, from, a.Port())
		}
		if p.Timestamp.IsZero() || p.Timestamp.After(time.Now()) || p.Timestamp.Before(before.Add(-5*time.Second)) {
			t.Errorf("packet %d: receive time %v not around %v", i, p.Timestamp, before)
		}
	}

	if _, err := a.WriteToAddress([]byte("x"), memberlist.Address{Addr: to, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if p := recvPacket(t, b); string(p.Buf) != "x" {
		t.Errorf("WriteToAddress delivered %q, want x", p.Buf)
	}
	if _, err := a.WriteTo([]byte("x"), "not an address"); err == nil {
		t.Error("a send to an invalid address did not fail")
	}
}

func TestNetTransportStreams(t *testing.T) {
	a := newNetTransport(t, "127.0.1.152")
	b := newNetTransport(t, "127.0.1.153")
	conn, err := a.DialAddressTimeout(memberlist.Address{Addr: fmt.Sprintf("127.0.1.153:%d", b.Port())}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("push-pull")); err != nil {
		t.Fatal(err)
	}
	var in net.Conn
	select {
	case in = <-b.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("no stream within 5 s")
	}
	defer in.Close()
	buf := make([]byte, 9)
	if _, err := io.ReadFull(in, buf); err != nil || string(buf) != "push-pull" {
		t.Fatalf("stream carried %q, %v; want push-pull", buf, err)
	}
	if _, err := a.DialTimeout("127.0.1.153:1", time.Second); err == nil {
		t.Error("a dial to a closed port did not fail")
	}
}

func TestNetTransportAddresses(t *testing.T) {
	nt := newNetTransport(t, "127.0.1.154")
	ip, port, err := nt.FinalAdvertiseAddr("", 0)
	if err != nil || ip.String() != "127.0.1.154" || port != nt.Port() || port == 0 {
		t.Errorf("advertise with nothing given = %v:%d, %v; want the bound 127.0.1.154:%d", ip, port, err, nt.Port())
	}
	ip, port, err = nt.FinalAdvertiseAddr("10.1.2.3", 7000)
	if err != nil || ip.String() != "10.1.2.3" || len(ip) != net.IPv4len || port != 7000 {
		t.Errorf("advertise 10.1.2.3:7000 = %v (%d bytes):%d, %v", ip, len(ip), port, err)
	}
	if _, _, err := nt.FinalAdvertiseAddr("pi-1", 7000); err == nil {
		t.Error("a host name was accepted as the advertise address")
	}
	if _, err := NewNetTransport("pi-1", 0, nil); err == nil {
		t.Error("a host name was accepted as the bind address")
	}
	if _, err := NewNetTransport("127.0.1.154", nt.Port(), nil); err == nil {
		t.Error("a second transport bound the same address and port")
	}
}

func TestNetTransportShutdown(t *testing.T) {
	nt, err := NewNetTransport("127.0.1.155", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := nt.Port()
	done := make(chan struct{})
	go func() {
		nt.Shutdown()
		nt.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return within 5 s")
	}
	// The port is free again, for TCP and UDP.
	again, err := NewNetTransport("127.0.1.155", port, nil)
	if err != nil {
		t.Fatalf("port %d not released: %v", port, err)
	}
	again.Shutdown()
}

// Shutdown returns even when a packet and a connection wait to be handed
// over and nobody reads them any more: memberlist, or a transport wrapping
// this one, may stop reading before it shuts the transport down.
func TestNetTransportShutdownWithNobodyReading(t *testing.T) {
	nt, err := NewNetTransport("127.0.1.160", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	send := newNetTransport(t, "127.0.1.161")
	to := fmt.Sprintf("127.0.1.160:%d", nt.Port())
	if _, err := send.WriteTo([]byte("never read"), to); err != nil {
		t.Fatal(err)
	}
	conn, err := send.DialTimeout(to, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The packet has been read off the socket once the UDP receive queue
	// is empty again; the reader then waits to hand it over.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := udpQueued(t, nt); n != 0 {
			return fmt.Errorf("%d bytes still queued on the UDP socket", n)
		}
		return nil
	})
	done := make(chan struct{})
	go func() {
		nt.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return within 5 s while a packet and a connection waited to be handed over")
	}
}

// BenchmarkReceivePacket compares the garbage each received packet makes:
// memberlist.NetTransport against NetTransport, the same 80-byte packet
// (a probe or heartbeat) over loopback, side by side.
//
//	go test -run '^$' -bench ReceivePacket -benchmem ./agent/cluster
func BenchmarkReceivePacket(b *testing.B) {
	packet := bytes.Repeat([]byte{1}, 80)
	run := func(b *testing.B, recv, send memberlist.Transport, to string) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := send.WriteTo(packet, to); err != nil {
				b.Fatal(err)
			}
			select {
			case <-recv.PacketCh():
			case <-time.After(5 * time.Second):
				b.Fatal("packet lost on loopback")
			}
		}
	}
	b.Run("memberlist.NetTransport", func(b *testing.B) {
		recv, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.1.156"}, Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			b.Fatal(err)
		}
		defer recv.Shutdown()
		send := newNetTransport(b, "127.0.1.157")
		run(b, recv, send, fmt.Sprintf("127.0.1.156:%d", recv.GetAutoBindPort()))
	})
	b.Run("NetTransport", func(b *testing.B) {
		recv := newNetTransport(b, "127.0.1.158")
		send := newNetTransport(b, "127.0.1.159")
		run(b, recv, send, fmt.Sprintf("127.0.1.158:%d", recv.Port()))
	})
}

// udpQueued is how many bytes wait in nt's UDP receive queue (FIONREAD).
func udpQueued(t *testing.T, nt *NetTransport) int {
	t.Helper()
	raw, err := nt.udp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatalf("FIONREAD: %v", errno)
	}
	return int(n)
}
