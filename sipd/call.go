package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// dialog is what a call needs of its SIP dialog, inbound (UAS) or outbound (UAC).
type dialog interface {
	Do(ctx context.Context, req *sip.Request) (*sip.Response, error)
	Bye(ctx context.Context) error
}

// Call is one call sipd holds: its dialog, its RTP stream and its WebSocket to the bridge.
type Call struct {
	ID        string // the platform's call id
	SIPCallID string
	Outbound  bool
	Transport string // udp or tcp
	Peer      string // host:port of the trunk or peer (tel: transfer targets go there)
	// CallerUser is the far party's user part (From of an inbound call, our caller id of an
	// outbound one): the From of a warm transfer's consult INVITE.
	CallerUser string
	trunk      *Trunk // an outbound call's trunk: its credentials serve a consult leg sent there
	key        string // Call-ID and our tag: finds the call from an in-dialog request
	log        *slog.Logger
	app        *App

	mu           sync.Mutex
	dlg          dialog
	remoteTarget sip.Uri // where in-dialog requests go (the peer's Contact)
	media        *Media
	stream       *Stream
	localSDP     []byte
	cancelInvite context.CancelCauseFunc // outbound, until answered
	answered     atomic.Bool
	transfer     atomic.Pointer[transferState]
	consult      *Leg // a warm transfer's second leg, while it is up
	endOnce      sync.Once
	ended        chan struct{}
	statusOnce   sync.Once
	statuses     chan StatusReport
}

func newCall(app *App, id, sipCallID string, outbound bool, transport, peer string) *Call {
	c := &Call{ID: id, SIPCallID: sipCallID, Outbound: outbound, Transport: transport, Peer: peer, app: app, ended: make(chan struct{})}
	direction := "inbound"
	if outbound {
		direction = "outbound"
	}
	c.log = app.log.With("call_id", id, "sip_call_id", sipCallID, "direction", direction)
	return c
}

// report sends a status to the API, in order, without holding up the caller.
func (c *Call) report(status string, code int, reason string) {
	c.statusOnce.Do(func() {
		c.statuses = make(chan StatusReport, 16)
		go func() {
			for r := range c.statuses {
				c.app.platform.Status(r)
				if finalStatus(r.Status) {
					return
				}
			}
		}()
	})
	r := StatusReport{CallID: c.ID, SIPCallID: c.SIPCallID, Status: status}
	if code > 0 {
		r.SIPCode = intp(code)
	}
	if reason != "" {
		r.Reason = strp(reason)
	}
	select {
	case c.statuses <- r:
	default:
		c.log.Warn("status dropped", "status", status)
	}
}

func finalStatus(s string) bool { return s != "ringing" && s != "in-progress" }

func dialogKey(callID, localTag string) string { return callID + "\x00" + localTag }

// Calls is the registry of live calls, by platform id and by dialog key.
type Calls struct {
	mu    sync.Mutex
	byID  map[string]*Call
	byKey map[string]*Call
}

func NewCalls() *Calls { return &Calls{byID: map[string]*Call{}, byKey: map[string]*Call{}} }

// Add registers c; false when its platform id is already held.
func (cs *Calls) Add(c *Call) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, taken := cs.byID[c.ID]; taken {
		return false
	}
	cs.byID[c.ID] = c
	if c.key != "" {
		cs.byKey[c.key] = c
	}
	return true
}

func (cs *Calls) Remove(c *Call) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byID[c.ID] == c {
		delete(cs.byID, c.ID)
	}
	if cs.byKey[c.key] == c {
		delete(cs.byKey, c.key)
	}
}

// AddKey finds c by another dialog of its own too (a warm transfer's consult leg).
func (cs *Calls) AddKey(key string, c *Call) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.byKey[key] = c
}

func (cs *Calls) RemoveKey(key string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.byKey, key)
}

func (cs *Calls) Get(id string) *Call {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.byID[id]
}

// ForRequest finds the call of an in-dialog request: its Call-ID and To tag (our tag).
func (cs *Calls) ForRequest(req *sip.Request) *Call {
	callID, to := req.CallID(), req.To()
	if callID == nil || to == nil {
		return nil
	}
	tag, _ := to.Params.Get("tag")
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.byKey[dialogKey(callID.Value(), tag)]
}

func (cs *Calls) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.byID)
}

func (cs *Calls) All() []*Call {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]*Call, 0, len(cs.byID))
	for _, c := range cs.byID {
		out = append(out, c)
	}
	return out
}

// connectMedia wires the RTP stream and the bridge's WebSocket together.
func (c *Call) connectMedia(media *Media, stream *Stream) {
	c.mu.Lock()
	c.media, c.stream = media, stream
	c.mu.Unlock()
	media.Route(stream.SendAudio, c.dtmfTo(stream), stream.SendMarks)
	stream.Run(StreamHandlers{
		Audio: func(audio []byte) { c.bridgePlayer().Write(audio) },
		Mark:  func(name string) { c.bridgePlayer().Mark(name) },
		Clear: func() {
			media.Player().Clear()
			if p := c.bridgePlayer(); p != media.Player() {
				p.Clear()
			}
		},
		Hangup: func() {
			if c.agentLeft() {
				return
			}
			c.log.Info("the bridge hangs up")
			go c.End("hangup", true)
		},
		Closed: func(err error) {
			if c.agentLeft() {
				return
			}
			c.log.Warn("the bridge closed the stream", "error", err)
			go c.End("error", true)
		},
	})
}

// bridgePlayer is where the bridge's audio plays: the consult leg's while a warm transfer
// consults, the caller's otherwise.
func (c *Call) bridgePlayer() *Player {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consult != nil {
		if state := c.transfer.Load(); state != nil && state.phase == phaseConsulting {
			return c.consult.media.Player()
		}
	}
	return c.media.Player()
}

func (c *Call) dtmfTo(stream *Stream) func(string) {
	return func(digit string) {
		c.log.Info("dtmf received") // the digit is not logged: keys may be a PIN
		stream.SendDTMF(digit)
	}
}

// DTMF from SIP INFO goes the same way as RFC 2833 events.
func (c *Call) infoDTMF(digit string) {
	c.mu.Lock()
	stream := c.stream
	c.mu.Unlock()
	if stream != nil {
		c.log.Info("dtmf received", "via", "info")
		stream.SendDTMF(digit)
	}
}

// End finishes the call once: stop to the bridge (reason hangup, transfer or error), RTP
// closed, BYE when sendBye and the call was answered, CANCEL when it was not, the final status.
func (c *Call) End(reason string, sendBye bool) {
	c.mu.Lock()
	if !c.answered.Load() && c.cancelInvite != nil {
		cancel := c.cancelInvite
		c.mu.Unlock()
		cancel(errHangupBeforeAnswer) // the outbound goroutine sends CANCEL and reports
		return
	}
	c.mu.Unlock()
	c.endOnce.Do(func() {
		defer close(c.ended)
		c.mu.Lock()
		stream, media, dlg, leg := c.stream, c.media, c.dlg, c.consult
		c.consult = nil
		phase := ""
		state := c.transfer.Load()
		if state != nil && state.warm {
			phase = state.phase
			state.phase = phaseOver
		}
		c.mu.Unlock()
		if phase == phaseConsulting {
			c.transferDone("failed", 0, "the call ended while the target was consulted")
		}
		if leg != nil {
			c.endLeg(leg, true)
		}
		if stream != nil {
			stream.Stop(reason)
		}
		if media != nil {
			media.Close()
		}
		if sendBye && dlg != nil && c.answered.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := dlg.Bye(ctx); err != nil {
				c.log.Warn("BYE failed", "error", err)
			}
			cancel()
		}
		c.app.calls.Remove(c)
		if c.answered.Load() {
			c.report("completed", 0, "")
		}
		c.log.Info("call ended", "reason", reason, "bye_sent", sendBye)
	})
}
