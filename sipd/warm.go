package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// A warm transfer (docs/telephony.md, "Warm transfer"): sipd dials the target as a second leg
// of the call (the consult leg). While it is up the caller is on hold (hears silence, is not
// heard by the bridge) and the bridge's stream is the target's: the agent briefs the human.
// When the agent leaves (the bridge hangs up or its stream closes) sipd joins the two legs,
// relaying RTP between them; a BYE from either then ends the other. If the target hangs up
// first, the stream goes back to the caller and the transfer failed.

// Transfer phases of a warm transfer (transferState.phase).
const (
	phaseDialing    = "dialing"
	phaseConsulting = "consulting"
	phaseJoined     = "joined"
	phaseOver       = "over" // failed, or the call ended
)

// Leg is the consult leg of a warm transfer: sipd's own UAC dialog with the target.
type Leg struct {
	SIPCallID string
	key       string
	dlg       *sipgo.DialogClientSession
	media     *Media
}

// TransferRequest is the body of POST /calls/{id}/transfer.
type TransferRequest struct {
	Target         string  `json:"target"`
	Mode           string  `json:"mode"`
	TimeoutSeconds float64 `json:"timeout_seconds"`
}

// Validate normalises the mode (cold when absent) and the ring timeout (30 s when absent).
func (r *TransferRequest) Validate() error {
	r.Mode = strings.ToLower(strings.TrimSpace(r.Mode))
	if r.Mode == "" {
		r.Mode = "cold"
	}
	if r.Mode != "cold" && r.Mode != "warm" {
		return fmt.Errorf("mode must be cold or warm")
	}
	if r.TimeoutSeconds == 0 {
		r.TimeoutSeconds = 30
	}
	if r.TimeoutSeconds < 1 || r.TimeoutSeconds > 300 {
		return fmt.Errorf("timeout_seconds must be between 1 and 300")
	}
	return nil
}

// ConsultFailed is why a consult leg was not answered: the target's SIP status (0: none).
type ConsultFailed struct {
	Code   int
	Reason string
}

func (e *ConsultFailed) Error() string {
	if e.Code > 0 {
		return fmt.Sprintf("the target answered %d %s", e.Code, e.Reason)
	}
	return e.Reason
}

// ConsultDestination is where the consult INVITE goes: its Request-URI (as ReferTarget maps a
// target) and the host:port to send it to ("" for a sip: URI: its own host).
func ConsultDestination(target, peer string) (sip.Uri, string, error) {
	uriText, err := ReferTarget(target, peer)
	if err != nil {
		return sip.Uri{}, "", err
	}
	var uri sip.Uri
	if err := sip.ParseUri(uriText, &uri); err != nil || uri.Host == "" {
		return sip.Uri{}, "", fmt.Errorf("target %q is not a SIP URI", target)
	}
	destination := ""
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(target)), "tel:") {
		destination = peer
	}
	return uri, destination, nil
}

// WarmTransfer dials target and, once it answers, hands it the bridge's stream (the caller on
// hold). It returns when the consult leg is answered (nil) or failed (*ConsultFailed, or an
// error saying why no INVITE was sent), within timeout.
func (c *Call) WarmTransfer(target string, timeout time.Duration) error {
	c.mu.Lock()
	callerMedia, stream := c.media, c.stream
	c.mu.Unlock()
	if callerMedia == nil || stream == nil || !c.answered.Load() {
		return fmt.Errorf("the call is not answered yet")
	}
	uri, destination, err := ConsultDestination(target, c.Peer)
	if err != nil {
		return err
	}
	state := &transferState{target: uri.String(), reported: make(chan struct{}), warm: true, phase: phaseDialing}
	c.mu.Lock()
	if prev := c.transfer.Load(); prev != nil && prev.outcome == "" {
		c.mu.Unlock()
		return errTransferBusy
	}
	c.transfer.Store(state)
	c.mu.Unlock()

	leg, err := c.dialConsult(uri, destination, callerMedia.codec, timeout)
	if err != nil {
		c.mu.Lock()
		state.phase, state.outcome = phaseOver, "failed" // answered synchronously: no report
		c.mu.Unlock()
		close(state.reported)
		c.log.Info("consult leg failed", "error", err)
		return err
	}
	c.mu.Lock()
	if state.phase != phaseDialing { // the call ended while the target was ringing
		c.mu.Unlock()
		c.endLeg(leg, true)
		return &ConsultFailed{Reason: "the call ended while the target was called"}
	}
	state.phase = phaseConsulting
	c.consult = leg
	c.mu.Unlock()
	c.app.calls.AddKey(leg.key, c)
	// the caller on hold: nothing more to or from the bridge; the target has the stream
	callerMedia.Route(nil, nil, stream.SendMarks) // its queued audio still plays out
	leg.media.Route(stream.SendAudio, stream.SendDTMF, stream.SendMarks)
	c.log.Info("consulting the transfer target", "target_call_id", leg.SIPCallID)
	return nil
}

// dialConsult sends the consult INVITE (the caller's codec only, and telephone-event) and
// waits for its answer; on 200 OK it ACKs and starts the leg's RTP.
func (c *Call) dialConsult(uri sip.Uri, destination, codec string, timeout time.Duration) (*Leg, error) {
	conn, err := c.app.ports.Listen()
	if err != nil {
		return nil, &ConsultFailed{Reason: "no RTP port: " + err.Error()}
	}
	offer, _ := OfferSDP([]string{codec}, c.app.cfg.PublicHost, conn.LocalAddr().(*net.UDPAddr).Port)
	leg := &Leg{SIPCallID: uuid.NewString()}
	fromTag := sip.GenerateTagN(16)
	leg.key = dialogKey(leg.SIPCallID, fromTag)
	inv := sip.NewRequest(sip.INVITE, uri)
	inv.SetTransport(strings.ToUpper(c.Transport))
	if destination != "" {
		inv.SetDestination(destination)
	}
	fromUser := c.CallerUser
	if fromUser == "" {
		fromUser = "sipd"
	}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: fromUser, Host: c.app.cfg.PublicHost}, Params: sip.NewParams()}
	from.Params.Add("tag", fromTag)
	to := &sip.ToHeader{Address: sip.Uri{Scheme: uri.Scheme, User: uri.User, Host: uri.Host, Port: uri.Port}, Params: sip.NewParams()}
	callID := sip.CallIDHeader(leg.SIPCallID)
	contact := c.app.contact(c.Transport)
	inv.AppendHeader(from)
	inv.AppendHeader(to)
	inv.AppendHeader(&callID)
	inv.AppendHeader(&contact)
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(offer)

	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, errNoAnswer)
	defer cancel()
	go func() { // the call ending cancels the ringing consult leg
		select {
		case <-c.ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	dlg, err := c.app.dialogUA(c.Transport).WriteInvite(ctx, inv)
	if err != nil {
		conn.Close()
		return nil, &ConsultFailed{Reason: "INVITE not sent: " + err.Error()}
	}
	c.log.Info("consult INVITE sent", "target", uri.String(), "codec", codec)
	opts := sipgo.AnswerOptions{}
	if trunk := c.trunk; trunk != nil && destination != "" && trunk.Password != nil && *trunk.Password != "" {
		opts.Password, opts.Username = *trunk.Password, fromUser
		if trunk.Username != nil && *trunk.Username != "" {
			opts.Username = *trunk.Username
		}
	}
	fail := func(e error) (*Leg, error) {
		conn.Close()
		dlg.Close()
		return nil, e
	}
	if err := dlg.WaitAnswer(ctx, opts); err != nil {
		var refused *sipgo.ErrDialogResponse
		switch {
		case errors.As(err, &refused):
			return fail(&ConsultFailed{Code: refused.Res.StatusCode, Reason: refused.Res.Reason})
		case errors.Is(context.Cause(ctx), errNoAnswer):
			return fail(&ConsultFailed{Code: 408, Reason: "no answer in time"})
		default:
			return fail(&ConsultFailed{Reason: err.Error()})
		}
	}
	if err := dlg.Ack(context.Background()); err != nil {
		c.log.Warn("consult ACK failed", "error", err)
	}
	leg.dlg = dlg
	answer, err := ParseSDP(dlg.InviteResponse.Body())
	pt, ok := answer.PayloadType(codec)
	if err != nil || !ok {
		_ = dlg.Bye(context.Background())
		return fail(&ConsultFailed{Code: 488, Reason: "the target did not answer with " + codec})
	}
	leg.media = NewMedia(conn, codec, pt, answer.EventPT, c.log.With("leg", "consult"))
	if err := leg.media.Start(answer.Host, answer.Port); err != nil {
		_ = dlg.Bye(context.Background())
		return fail(&ConsultFailed{Reason: err.Error()})
	}
	return leg, nil
}

// agentLeft: the bridge hung up or its stream closed. While consulting, the legs are joined
// (true); otherwise the call ends as usual (false).
func (c *Call) agentLeft() bool {
	state := c.transfer.Load()
	c.mu.Lock()
	if state == nil || !state.warm || state.phase != phaseConsulting || c.consult == nil {
		c.mu.Unlock()
		return false
	}
	state.phase = phaseJoined
	leg, callerMedia, stream := c.consult, c.media, c.stream
	c.mu.Unlock()
	callerMedia.Route(nil, nil, nil)
	leg.media.Route(nil, nil, nil)
	callerMedia.RelayTo(leg.media)
	leg.media.RelayTo(callerMedia)
	c.log.Info("the agent left: caller and target joined", "target_call_id", leg.SIPCallID)
	go stream.Stop("transfer")
	c.transferDone("completed", 200, "")
	return true
}

// consultHungUp: the target sent BYE. Consulting: the caller goes back to the agent and the
// transfer failed. Joined: the call ends (BYE to the caller).
func (c *Call) consultHungUp() {
	state := c.transfer.Load()
	c.mu.Lock()
	leg := c.consult
	phase := ""
	if state != nil {
		phase = state.phase
		if phase == phaseConsulting {
			state.phase = phaseOver
		}
	}
	c.consult = nil
	callerMedia, stream := c.media, c.stream
	c.mu.Unlock()
	if leg == nil {
		return
	}
	c.endLeg(leg, false)
	if phase == phaseJoined {
		c.log.Info("the transfer target hangs up (BYE)")
		c.End("transfer", true)
		return
	}
	c.log.Info("the transfer target hung up while consulted: back to the caller")
	if callerMedia != nil && stream != nil {
		callerMedia.Route(stream.SendAudio, c.dtmfTo(stream), stream.SendMarks)
	}
	c.transferDone("failed", 0, "the target hung up before the agent left")
}

// endLeg closes the consult leg's RTP and, when bye, its dialog.
func (c *Call) endLeg(leg *Leg, bye bool) {
	c.app.calls.RemoveKey(leg.key)
	if leg.media != nil {
		leg.media.Close()
	}
	switch {
	case bye && leg.dlg != nil:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := leg.dlg.Bye(ctx); err != nil {
			c.log.Warn("consult BYE failed", "error", err)
		}
		cancel()
	case leg.dlg != nil:
		leg.dlg.Close()
	}
}

// isConsult tells whether an in-dialog request belongs to the consult leg.
func (c *Call) isConsult(req *sip.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.consult != nil && req.CallID() != nil && req.CallID().Value() == c.consult.SIPCallID
}
