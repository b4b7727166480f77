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
	mu       sync.Mutex
	remote   *net.UDPAddr
	latched  bool
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
		m.mu.Unlock()
		switch {
		case h.PayloadType == m.pt:
			if m.OnAudio != nil && len(payload) > 0 {
				stats.RTPIn.Add(1)
				m.OnAudio(append([]byte(nil), payload...), at)
			}
		case int(h.PayloadType) == m.eventPT:
			if digit := dtmf.Feed(h.Timestamp, payload); digit != "" && m.OnDTMF != nil {
				m.OnDTMF(digit)
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
		frame, marks := m.player.Tick()
		if frame == nil {
			frame = silence
		}
		m.mu.Lock()
		remote := m.remote
		m.mu.Unlock()
		packet = AppendRTP(packet[:0], h, frame)
		if _, err := m.conn.WriteToUDP(packet, remote); err != nil && !errors.Is(err, net.ErrClosed) {
			m.log.Debug("rtp write failed", "error", err)
		} else {
			stats.RTPOut.Add(1)
		}
		h.Marker = false
		h.Sequence++
		h.Timestamp += FrameBytes
		if len(marks) > 0 && m.OnMarks != nil {
			m.OnMarks(marks)
		}
	}
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
