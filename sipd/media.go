package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// PortPool hands out even UDP ports of SIPD_RTP_PORTS, round robin, skipping ports in use.
type PortPool struct {
	mu       sync.Mutex
	host     string
	min, max int
	next     int
}

func NewPortPool(host string, min, max int) *PortPool {
	return &PortPool{host: host, min: min, max: max, next: min}
}

// Listen binds the next free even port.
func (p *PortPool) Listen() (*net.UDPConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	count := (p.max-p.min)/2 + 1
	for i := 0; i < count; i++ {
		port := p.next
		p.next += 2
		if p.next > p.max {
			p.next = p.min
		}
		addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(p.host, strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		if conn, err := net.ListenUDP("udp", addr); err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("no free RTP port in %d-%d", p.min, p.max)
}

// Media is one call's RTP stream: what the caller says goes to OnAudio (raw payloads) and
// OnDTMF; what the player holds goes out every 20 ms (silence when it holds nothing).
type Media struct {
	conn     *net.UDPConn
	codec    string
	pt       uint8 // payload type of codec in this call
	eventPT  int   // telephone-event payload type, -1 for none
	player   *Player
	log      *slog.Logger
	OnAudio  func([]byte, time.Time) // a payload and when its packet was read
	OnDTMF   func(string)
	OnMarks  func([]string)
	mu       sync.Mutex // guards the handlers above once started, remote, latched, relay
	remote   *net.UDPAddr
	latched  bool
	relay    *Media // while set, every packet received goes to relay as it is, and the player is silent
	cancel   context.CancelFunc
	done     chan struct{}
	closeOne sync.Once
}

func NewMedia(conn *net.UDPConn, codec string, pt uint8, eventPT int, log *slog.Logger) *Media {
	return &Media{conn: conn, codec: codec, pt: pt, eventPT: eventPT, player: NewPlayer(codec), log: log, done: make(chan struct{})}
}

// LocalPort is the UDP port written in our SDP.
func (m *Media) LocalPort() int { return m.conn.LocalAddr().(*net.UDPAddr).Port }

// Player holds the audio to play to the caller.
func (m *Media) Player() *Player { return m.player }

// Start sends to host:port (from the remote SDP) until Close; the first packet received
// moves the destination to its source (symmetric RTP, for callers behind NAT).
func (m *Media) Start(host string, port int) error {
	addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("remote RTP address: %w", err)
	}
	m.mu.Lock()
	m.remote = addr
	m.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.receive()
	go m.send(ctx)
	return nil
}

func (m *Media) receive() {
	buf := make([]byte, 2048)
	var dtmf DTMFDetector
	for {
		n, from, err := m.conn.ReadFromUDP(buf)
		at := time.Now()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Warn("rtp read failed", "error", err)
			}
			return
		}
		h, payload, err := ParseRTP(buf[:n])
		if err != nil {
			continue
		}
		m.mu.Lock()
		if !m.latched {
			m.remote, m.latched = from, true
		}
		onAudio, onDTMF, relay := m.OnAudio, m.OnDTMF, m.relay
		m.mu.Unlock()
		switch {
		case relay != nil:
			if h.PayloadType == m.pt {
				stats.RTPIn.Add(1)
				relay.forward(h, payload, false)
			} else if int(h.PayloadType) == m.eventPT {
				relay.forward(h, payload, true)
			}
		case h.PayloadType == m.pt:
			if onAudio != nil && len(payload) > 0 {
				stats.RTPIn.Add(1)
				onAudio(append([]byte(nil), payload...), at)
			}
		case int(h.PayloadType) == m.eventPT:
			if digit := dtmf.Feed(h.Timestamp, payload); digit != "" && onDTMF != nil {
				onDTMF(digit)
			}
		}
	}
}

func (m *Media) send(ctx context.Context) {
	defer close(m.done)
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	silence := make([]byte, FrameBytes)
	for i := range silence {
		silence[i] = silenceByte(m.codec)
	}
	h := RTPHeader{PayloadType: m.pt, Marker: true, Sequence: uint16(rand.Uint32()), Timestamp: rand.Uint32(), SSRC: rand.Uint32()}
	packet := make([]byte, 0, 12+FrameBytes)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		m.mu.Lock()
		remote, relaying, onMarks := m.remote, m.relay != nil, m.OnMarks
		m.mu.Unlock()
		if relaying { // the other leg's packets go out as they come (forward)
			continue
		}
		frame, marks := m.player.Tick()
		if frame == nil {
			frame = silence
		}
		packet = AppendRTP(packet[:0], h, frame)
		if _, err := m.conn.WriteToUDP(packet, remote); err != nil && !errors.Is(err, net.ErrClosed) {
			m.log.Debug("rtp write failed", "error", err)
		} else {
			stats.RTPOut.Add(1)
		}
		h.Marker = false
		h.Sequence++
		h.Timestamp += FrameBytes
		if len(marks) > 0 && onMarks != nil {
			onMarks(marks)
		}
	}
}

// Route changes where the received audio, keys and played marks go (nil: nowhere), at once.
func (m *Media) Route(onAudio func([]byte, time.Time), onDTMF func(string), onMarks func([]string)) {
	m.mu.Lock()
	m.OnAudio, m.OnDTMF, m.OnMarks = onAudio, onDTMF, onMarks
	m.mu.Unlock()
}

// RelayTo sends every packet m receives (audio and telephone-events) on through other, as
// it comes, and stops m's own player: two legs joined without the bridge. Call it on both.
func (m *Media) RelayTo(other *Media) {
	m.mu.Lock()
	m.relay = other
	m.mu.Unlock()
}

// forward sends another leg's packet to m's peer, its payload type renamed to m's (same
// codec: the consult leg was offered only the caller's); events m's peer did not take are dropped.
func (m *Media) forward(h RTPHeader, payload []byte, event bool) {
	pt := m.pt
	if event {
		if m.eventPT < 0 {
			return
		}
		pt = uint8(m.eventPT)
	}
	m.mu.Lock()
	remote := m.remote
	m.mu.Unlock()
	if remote == nil {
		return
	}
	if _, err := m.conn.WriteToUDP(RelayPacket(h, payload, pt), remote); err == nil {
		stats.RTPOut.Add(1)
	}
}

// RelayPacket is a received packet sent on: its header as it was (sequence, timestamp,
// SSRC, marker: the far end sees the other leg's stream) with payload type pt.
func RelayPacket(h RTPHeader, payload []byte, pt uint8) []byte {
	h.PayloadType = pt
	return AppendRTP(make([]byte, 0, 12+len(payload)), h, payload)
}

// Close stops both directions and frees the port.
func (m *Media) Close() {
	m.closeOne.Do(func() {
		if m.cancel != nil {
			m.cancel()
			<-m.done
		}
		m.conn.Close()
	})
}
