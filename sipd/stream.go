package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Stream is one call's WebSocket to the media bridge (docs/telephony.md, "sipd"): JSON events
// and binary G.711 both ways.
type Stream struct {
	conn     *websocket.Conn
	log      *slog.Logger
	audio    chan callerFrame // caller's audio to the bridge; dropped when the bridge lags
	ctx      context.Context
	cancel   context.CancelFunc
	stopped  sync.Once
	stopping atomic.Bool
	wg       sync.WaitGroup
}

// callerFrame is a payload of the caller's and when its RTP packet was read.
type callerFrame struct {
	data []byte
	at   time.Time
}

// StreamHandlers are what the bridge can ask for.
type StreamHandlers struct {
	Audio  func([]byte) // raw G.711 to play
	Mark   func(string) // echo once the audio before it is played
	Clear  func()       // drop queued audio and marks
	Hangup func()       // the bridge ends the call
	Closed func(error)  // the WebSocket closed without a stop from us
}

type startMessage struct {
	Event      string `json:"event"`
	CallID     string `json:"call_id"`
	Token      string `json:"token"`
	Codec      string `json:"codec"`
	SampleRate int    `json:"sample_rate"`
	SIPCallID  string `json:"sip_call_id"`
}

// OpenStream dials url and sends the start message.
func OpenStream(ctx context.Context, url string, start startMessage, log *slog.Logger) (*Stream, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dialCtx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", url, err)
	}
	conn.SetReadLimit(1 << 20)
	s := &Stream{conn: conn, log: log, audio: make(chan callerFrame, 256)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	start.Event, start.SampleRate = "start", 8000
	if err := s.sendJSON(start); err != nil {
		conn.CloseNow()
		return nil, fmt.Errorf("stream start: %w", err)
	}
	return s, nil
}

// Run reads the bridge's messages and writes the caller's audio until the stream ends.
func (s *Stream) Run(h StreamHandlers) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-s.ctx.Done():
				return
			case frame := <-s.audio:
				if err := s.conn.Write(s.ctx, websocket.MessageBinary, frame.data); err != nil {
					return
				}
				stats.InboundLatency.Add(time.Since(frame.at))
			}
		}
	}()
	go func() {
		err := s.read(h)
		if !s.stopping.Load() && h.Closed != nil {
			h.Closed(err)
		}
	}()
}

func (s *Stream) read(h StreamHandlers) error {
	for {
		kind, data, err := s.conn.Read(s.ctx)
		if err != nil {
			return err
		}
		if kind == websocket.MessageBinary {
			h.Audio(data)
			continue
		}
		var msg struct {
			Event string `json:"event"`
			Name  string `json:"name"`
		}
		if err := json.Unmarshal(data, &msg); err != nil {
			s.log.Warn("bridge sent a text message that is not JSON", "bytes", len(data))
			continue
		}
		switch msg.Event {
		case "mark":
			h.Mark(msg.Name)
		case "clear":
			h.Clear()
		case "hangup":
			h.Hangup()
		default:
			s.log.Debug("bridge event ignored", "event", msg.Event)
		}
	}
}

// SendAudio queues the caller's audio for the bridge (dropped when 5 s are already queued).
func (s *Stream) SendAudio(payload []byte, at time.Time) {
	select {
	case s.audio <- callerFrame{payload, at}:
	default:
		stats.Dropped.Add(1)
	}
}

// SendDTMF tells the bridge a key was pressed.
func (s *Stream) SendDTMF(digit string) { s.event(map[string]string{"event": "dtmf", "digit": digit}) }

// SendMarks echoes marks whose audio has been played.
func (s *Stream) SendMarks(names []string) {
	for _, name := range names {
		s.event(map[string]string{"event": "mark", "name": name})
	}
}

func (s *Stream) event(msg any) {
	if err := s.sendJSON(msg); err != nil && !s.stopping.Load() {
		s.log.Debug("stream write failed", "error", err)
	}
}

func (s *Stream) sendJSON(msg any) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.conn.Write(ctx, websocket.MessageText, data)
}

// Stop sends stop with reason (unless the WebSocket is already gone) and closes it.
func (s *Stream) Stop(reason string) {
	s.stopped.Do(func() {
		s.stopping.Store(true)
		if err := s.sendJSON(map[string]string{"event": "stop", "reason": reason}); err == nil {
			s.conn.Close(websocket.StatusNormalClosure, reason) // waits (5 s at most) for the bridge's close
		}
		s.cancel()
		s.conn.CloseNow()
		s.wg.Wait()
	})
}
