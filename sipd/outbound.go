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

// Trunk is where an outbound INVITE goes and how it authenticates.
type Trunk struct {
	Address   string  `json:"address"`
	Transport string  `json:"transport"`
	Username  *string `json:"username"`
	Password  *string `json:"password"`
}

// OutboundRequest is the body of POST /calls.
type OutboundRequest struct {
	CallID          string   `json:"call_id"`
	To              string   `json:"to"`
	FromUser        string   `json:"from_user"`
	Trunk           Trunk    `json:"trunk"`
	StreamURL       string   `json:"stream_url"`
	Token           string   `json:"token"`
	CodecPreference []string `json:"codec_preference"`
	TimeoutSeconds  float64  `json:"timeout_seconds"`
}

var (
	errHangupBeforeAnswer = errors.New("hung up before answer")
	errNoAnswer           = errors.New("no answer in time")
)

// Validate checks a POST /calls body; the error says what to fix.
func (r *OutboundRequest) Validate() error {
	if strings.TrimSpace(r.CallID) == "" {
		return fmt.Errorf("call_id is required")
	}
	var to sip.Uri
	if err := sip.ParseUri(r.To, &to); err != nil || to.Host == "" || (to.Scheme != "sip" && to.Scheme != "sips") {
		return fmt.Errorf("to must be a full SIP URI like sip:+15551234567@host:port")
	}
	if r.FromUser == "" || strings.ContainsAny(r.FromUser, " <>@:;\"") {
		return fmt.Errorf("from_user must be a user part like +15550001111")
	}
	if _, _, err := net.SplitHostPort(r.Trunk.Address); err != nil {
		return fmt.Errorf("trunk.address must be host:port")
	}
	r.Trunk.Transport = strings.ToLower(r.Trunk.Transport)
	if r.Trunk.Transport == "" {
		r.Trunk.Transport = "udp"
	}
	if r.Trunk.Transport != "udp" && r.Trunk.Transport != "tcp" {
		return fmt.Errorf("trunk.transport must be udp or tcp")
	}
	if !strings.HasPrefix(r.StreamURL, "ws://") && !strings.HasPrefix(r.StreamURL, "wss://") {
		return fmt.Errorf("stream_url must be a ws:// or wss:// URL")
	}
	if r.Token == "" {
		return fmt.Errorf("token is required")
	}
	if len(r.CodecPreference) == 0 {
		r.CodecPreference = []string{"PCMU", "PCMA"}
	}
	for i, c := range r.CodecPreference {
		r.CodecPreference[i] = strings.ToUpper(c)
		if _, ok := codecPayloadTypes[r.CodecPreference[i]]; !ok {
			return fmt.Errorf("codec_preference: %q is not PCMU or PCMA", c)
		}
	}
	if r.TimeoutSeconds == 0 {
		r.TimeoutSeconds = 30
	}
	if r.TimeoutSeconds < 1 || r.TimeoutSeconds > 600 {
		return fmt.Errorf("timeout_seconds must be between 1 and 600")
	}
	return nil
}

// Dial registers an outbound call and sends its INVITE in the background.
func (a *App) Dial(r OutboundRequest) (*Call, error) {
	sipCallID := uuid.NewString()
	fromTag := sip.GenerateTagN(16)
	call := newCall(a, r.CallID, sipCallID, true, r.Trunk.Transport, r.Trunk.Address)
	trunk := r.Trunk
	call.CallerUser, call.trunk = r.FromUser, &trunk
	call.key = dialogKey(sipCallID, fromTag)
	ctx, cancel := context.WithCancelCause(context.Background())
	call.cancelInvite = cancel
	if !a.calls.Add(call) {
		cancel(nil)
		return nil, errCallExists
	}
	stats.Placed.Add(1)
	go a.dial(ctx, call, r, fromTag)
	return call, nil
}

var errCallExists = errors.New("call exists")

func (a *App) dial(ctx context.Context, call *Call, r OutboundRequest, fromTag string) {
	status := call.report
	conn, err := a.ports.Listen()
	if err != nil {
		call.log.Error("no RTP port", "error", err)
		a.calls.Remove(call)
		status("failed", 0, "no_rtp_port")
		return
	}
	offer, _ := OfferSDP(r.CodecPreference, a.cfg.PublicHost, conn.LocalAddr().(*net.UDPAddr).Port)
	inv := a.inviteFor(call, r, fromTag, offer)
	dlg, err := a.dialogUA(call.Transport).WriteInvite(ctx, inv)
	fail := func(s string, code int, reason string) {
		conn.Close()
		if dlg != nil {
			dlg.Close()
		}
		a.calls.Remove(call)
		call.log.Info("outbound call not answered", "status", s, "sip_code", code, "reason", reason)
		status(s, code, reason)
	}
	if err != nil {
		fail("failed", 0, "invite not sent: "+err.Error())
		return
	}
	call.log.Info("INVITE sent", "trunk", r.Trunk.Address, "transport", call.Transport)
	waitCtx, stop := context.WithTimeoutCause(ctx, time.Duration(r.TimeoutSeconds*float64(time.Second)), errNoAnswer)
	defer stop()
	ringing := false
	opts := sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		if (res.StatusCode == 180 || res.StatusCode == 183) && !ringing {
			ringing = true
			status("ringing", res.StatusCode, "")
		}
		return nil
	}}
	if r.Trunk.Password != nil && *r.Trunk.Password != "" {
		opts.Password = *r.Trunk.Password
		opts.Username = r.FromUser
		if r.Trunk.Username != nil && *r.Trunk.Username != "" {
			opts.Username = *r.Trunk.Username
		}
	}
	if err := dlg.WaitAnswer(waitCtx, opts); err != nil {
		var refused *sipgo.ErrDialogResponse
		switch {
		case errors.As(err, &refused):
			fail(outboundStatus(refused.Res.StatusCode), refused.Res.StatusCode, refused.Res.Reason)
		case errors.Is(context.Cause(waitCtx), errHangupBeforeAnswer):
			fail("canceled", 0, "")
		case errors.Is(context.Cause(waitCtx), errNoAnswer):
			fail("no-answer", 0, "")
		default:
			fail("failed", 0, err.Error())
		}
		return
	}
	if err := dlg.Ack(context.Background()); err != nil {
		call.log.Warn("ACK failed", "error", err)
	}
	call.mu.Lock()
	call.dlg = dlg
	if contact := dlg.InviteResponse.Contact(); contact != nil {
		call.remoteTarget = contact.Address
	} else {
		call.remoteTarget = inv.Recipient
	}
	hungUp := ctx.Err() != nil
	if !hungUp {
		call.answered.Store(true)
	}
	call.mu.Unlock()
	if hungUp { // hung up between the 200 OK and now
		_ = dlg.Bye(context.Background())
		fail("canceled", 200, "")
		return
	}
	if err := a.connectOutbound(ctx, call, r, dlg, conn); err != nil {
		call.log.Error("answered call failed", "error", err)
		status("failed", 200, err.Error())
		call.End("error", true)
		return
	}
	status("in-progress", 200, "")
}

// inviteFor builds the INVITE: Request-URI r.To, sent to the trunk, From our caller id.
func (a *App) inviteFor(call *Call, r OutboundRequest, fromTag string, offer []byte) *sip.Request {
	var recipient sip.Uri
	_ = sip.ParseUri(r.To, &recipient)
	inv := sip.NewRequest(sip.INVITE, recipient)
	inv.SetTransport(strings.ToUpper(call.Transport))
	inv.SetDestination(r.Trunk.Address)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: r.FromUser, Host: a.cfg.PublicHost}, Params: sip.NewParams()}
	from.Params.Add("tag", fromTag)
	to := &sip.ToHeader{Address: sip.Uri{Scheme: recipient.Scheme, User: recipient.User, Host: recipient.Host, Port: recipient.Port}, Params: sip.NewParams()}
	callID := sip.CallIDHeader(call.SIPCallID)
	contact := a.contact(call.Transport)
	contact.Address.User = r.FromUser
	inv.AppendHeader(from)
	inv.AppendHeader(to)
	inv.AppendHeader(&callID)
	inv.AppendHeader(&contact)
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(offer)
	return inv
}

// connectOutbound starts RTP with the answer's codec and opens the bridge stream.
func (a *App) connectOutbound(ctx context.Context, call *Call, r OutboundRequest, dlg *sipgo.DialogClientSession, conn *net.UDPConn) error {
	answer, err := ParseSDP(dlg.InviteResponse.Body())
	if err != nil {
		conn.Close()
		return fmt.Errorf("answer SDP: %w", err)
	}
	codec := ""
	for _, c := range answer.Codecs {
		if ChooseCodec(answer, []string{c}) != "" && containsCodec(r.CodecPreference, c) {
			codec = c
			break
		}
	}
	if codec == "" {
		conn.Close()
		return fmt.Errorf("the answer has none of the offered codecs (%v)", answer.Codecs)
	}
	pt, _ := answer.PayloadType(codec)
	media := NewMedia(conn, codec, pt, answer.EventPT, call.log)
	stream, err := OpenStream(ctx, r.StreamURL, startMessage{CallID: call.ID, Token: r.Token, Codec: codec, SIPCallID: call.SIPCallID}, call.log)
	if err != nil {
		media.Close()
		return err
	}
	call.connectMedia(media, stream)
	call.log.Info("answered", "codec", codec, "rtp_port", media.LocalPort())
	return media.Start(answer.Host, answer.Port)
}

func containsCodec(list []string, codec string) bool {
	for _, c := range list {
		if strings.EqualFold(c, codec) {
			return true
		}
	}
	return false
}
