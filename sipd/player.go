package main

import "sync"

// FrameBytes is 20 ms of G.711 at 8 kHz: one RTP packet.
const FrameBytes = 160

// Player is the queue of audio the bridge sent for the caller, and the bridge's marks in it.
// Tick, called every 20 ms, takes the next 160-byte frame; a mark is due once every byte
// queued before it has been taken. Clear drops the audio and the pending marks at once.
type Player struct {
	mu      sync.Mutex
	buf     []byte
	taken   uint64 // bytes taken since the start (cleared bytes count as taken)
	queued  uint64 // bytes queued since the start
	marks   []pendingMark
	waiting int // ticks a partial frame has waited for the rest of its bytes
	silence byte
}

type pendingMark struct {
	name string
	at   uint64 // queued-byte position the mark follows
}

// NewPlayer for codec "PCMU" or "PCMA" (its silence fills a short last frame).
func NewPlayer(codec string) *Player {
	return &Player{silence: silenceByte(codec)}
}

// Write queues audio.
func (p *Player) Write(audio []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, audio...)
	p.queued += uint64(len(audio))
	p.waiting = 0
}

// Mark queues a mark after the audio queued so far.
func (p *Player) Mark(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marks = append(p.marks, pendingMark{name: name, at: p.queued})
}

// Clear drops every queued byte and every pending mark (they are never echoed).
func (p *Player) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.taken += uint64(len(p.buf))
	p.buf = p.buf[:0]
	p.marks = nil
	p.waiting = 0
}

// Pending is the number of queued bytes.
func (p *Player) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf)
}

// Tick takes the next frame (nil when there is nothing to play) and the marks now due.
// A partial frame (< 160 bytes) waits one tick for the rest, unless a mark follows it;
// then it is padded with silence.
func (p *Player) Tick() ([]byte, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var frame []byte
	switch n := len(p.buf); {
	case n >= FrameBytes:
		frame = append([]byte(nil), p.buf[:FrameBytes]...)
	case n > 0 && (p.waiting > 0 || p.markAt(p.queued)):
		frame = make([]byte, FrameBytes)
		copy(frame, p.buf)
		for i := n; i < FrameBytes; i++ {
			frame[i] = p.silence
		}
	case n > 0:
		p.waiting++
	}
	if frame != nil {
		used := min(len(p.buf), FrameBytes)
		p.buf = append(p.buf[:0], p.buf[used:]...)
		p.taken += uint64(used)
		p.waiting = 0
	}
	var due []string
	for len(p.marks) > 0 && p.marks[0].at <= p.taken {
		due = append(due, p.marks[0].name)
		p.marks = p.marks[1:]
	}
	return frame, due
}

func (p *Player) markAt(position uint64) bool {
	for _, m := range p.marks {
		if m.at == position {
			return true
		}
	}
	return false
}
