package main

import (
	"bytes"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestTransferRequestModesAndTimeout(t *testing.T) {
	r := TransferRequest{Target: "sip:desk@h"}
	if err := r.Validate(); err != nil || r.Mode != "cold" || r.TimeoutSeconds != 30 {
		t.Fatalf("defaults: %+v %v", r, err)
	}
	r = TransferRequest{Target: "sip:desk@h", Mode: " Warm ", TimeoutSeconds: 12}
	if err := r.Validate(); err != nil || r.Mode != "warm" || r.TimeoutSeconds != 12 {
		t.Fatalf("warm: %+v %v", r, err)
	}
	for _, bad := range []TransferRequest{{Mode: "lukewarm"}, {Mode: "warm", TimeoutSeconds: 0.5}, {TimeoutSeconds: 301}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestConsultDestination(t *testing.T) {
	uri, dest, err := ConsultDestination("sip:desk@127.0.0.1:5090", "10.0.0.9:5060")
	if err != nil || uri.User != "desk" || uri.Host != "127.0.0.1" || uri.Port != 5090 || dest != "" {
		t.Fatalf("sip: %v %q %v", uri, dest, err)
	}
	uri, dest, err = ConsultDestination("tel:+15551234567", "10.0.0.9:5060")
	if err != nil || uri.User != "+15551234567" || uri.Host != "10.0.0.9" || dest != "10.0.0.9:5060" {
		t.Fatalf("tel: %v %q %v", uri, dest, err)
	}
	if _, _, err := ConsultDestination("desk", "h:1"); err == nil {
		t.Fatal("a bare name accepted")
	}
}

func TestRelayPacketKeepsTheHeaderButThePayloadType(t *testing.T) {
	h := RTPHeader{Marker: true, PayloadType: 8, Sequence: 7, Timestamp: 1600, SSRC: 0xABCD}
	packet := RelayPacket(h, []byte{1, 2, 3}, 0)
	got, payload, err := ParseRTP(packet)
	if err != nil || !bytes.Equal(payload, []byte{1, 2, 3}) {
		t.Fatalf("%v %v", payload, err)
	}
	h.PayloadType = 0
	if got != h {
		t.Fatalf("header %+v, want %+v", got, h)
	}
}

// Two legs joined: what each peer sends reaches the other (audio and telephone-events,
// payload types renamed), and neither leg plays its own silence any more.
func TestJoinedMediaRelaysBothWays(t *testing.T) {
	listen := func() *net.UDPConn {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	callerPeer, targetPeer := listen(), listen()
	defer callerPeer.Close()
	defer targetPeer.Close()
	log := slog.New(slog.NewTextHandler(bytes.NewBuffer(nil), nil))
	caller := NewMedia(listen(), "PCMU", 0, 101, log)
	target := NewMedia(listen(), "PCMU", 0, 96, log)
	caller.RelayTo(target)
	target.RelayTo(caller)
	for m, peer := range map[*Media]*net.UDPConn{caller: callerPeer, target: targetPeer} {
		port := peer.LocalAddr().(*net.UDPAddr).Port
		if err := m.Start("127.0.0.1", port); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
	}
	send := func(from *net.UDPConn, to *Media, h RTPHeader, payload []byte) {
		addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: to.LocalPort()}
		if _, err := from.WriteToUDP(AppendRTP(nil, h, payload), addr); err != nil {
			t.Fatal(err)
		}
	}
	receive := func(conn *net.UDPConn) (RTPHeader, []byte) {
		buf := make([]byte, 2048)
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("nothing relayed: %v", err)
		}
		h, payload, err := ParseRTP(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		return h, append([]byte(nil), payload...)
	}
	spoken := bytes.Repeat([]byte{0x11}, 160)
	send(callerPeer, caller, RTPHeader{PayloadType: 0, Sequence: 1, Timestamp: 160, SSRC: 5}, spoken)
	h, payload := receive(targetPeer)
	if h.PayloadType != 0 || h.SSRC != 5 || !bytes.Equal(payload, spoken) {
		t.Fatalf("caller -> target: %+v", h)
	}
	event := []byte{5, 0x80 | 10, 0, 160}
	send(callerPeer, caller, RTPHeader{PayloadType: 101, Sequence: 2, Timestamp: 320, SSRC: 5}, event)
	h, payload = receive(targetPeer)
	if h.PayloadType != 96 || !bytes.Equal(payload, event) {
		t.Fatalf("caller's key -> target: %+v %v", h, payload)
	}
	answer := bytes.Repeat([]byte{0x22}, 160)
	send(targetPeer, target, RTPHeader{PayloadType: 0, Sequence: 9, Timestamp: 900, SSRC: 6}, answer)
	h, payload = receive(callerPeer)
	if h.SSRC != 6 || !bytes.Equal(payload, answer) {
		t.Fatalf("target -> caller: %+v", h)
	}
	// no silence of sipd's own on either side: nothing more arrives
	_ = callerPeer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := callerPeer.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Fatalf("the caller heard %d bytes sipd played itself", n)
	}
}
