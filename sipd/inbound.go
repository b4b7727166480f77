package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// onInvite: 100 Trying, ask the API, then answer (200 with SDP), challenge (401) or refuse.
func (a *App) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		a.onReInvite(req, tx)
		return
	}
	transport := transportOf(req)
	dlg, err := a.dialogUA(transport).ReadInvite(req, tx)
	if err != nil {
		respond(tx, req, 400, "Bad Request")
		return
	}
	defer func() {
		if dlg.LoadState() != sip.DialogStateEstablished && dlg.LoadState() != sip.DialogStateConfirmed {
			dlg.Close()
		}
	}()
	_ = dlg.Respond(100, "Trying", nil)
	sipCallID := req.CallID().Value()
	log := a.log.With("sip_call_id", sipCallID, "direction", "inbound")

	var offer Offer
	var offerErr error
	if len(req.Body()) == 0 {
		offerErr = fmt.Errorf("no SDP offer (delayed offer is not supported)")
	} else {
		offer, offerErr = ParseSDP(req.Body())
	}
	ask := inviteRequest(req, transport, OfferedG711(offer))
	ctx, cancel := context.WithTimeout(dlg.Context(), a.cfg.APITimeout)
	decision, err := a.platform.Invite(ctx, ask)
	cancel()
	if dlg.Context().Err() != nil {
		log.Info("INVITE canceled while the API decided")
		return
	}
	if err != nil {
		stats.Refused.Add(1)
		log.Error("the API did not decide; 503", "error", err)
		_ = dlg.Respond(503, "Service Unavailable", nil, sip.NewHeader("X-Voxagent-Reason", "api_unavailable"))
		return
	}
	switch decision.Action {
	case "challenge":
		realm := decision.Realm
		if realm == "" {
			realm = a.cfg.Realm
		}
		value := fmt.Sprintf(`Digest realm=%q, nonce=%q, algorithm=MD5, qop="auth"`, realm, decision.Nonce)
		log.Info("INVITE challenged", "to_user", ask.ToUser)
		_ = dlg.Respond(401, "Unauthorized", nil, sip.NewHeader("WWW-Authenticate", value))
		return
	case "refuse":
		status := decision.Status
		if status < 400 || status > 699 {
			status = 403
		}
		stats.Refused.Add(1)
		log.Info("INVITE refused", "status", status, "reason", decision.Reason, "to_user", ask.ToUser)
		_ = dlg.Respond(status, reasonPhrase(status), nil, sip.NewHeader("X-Voxagent-Reason", decision.Reason))
		return
	}
	call := newCall(a, decision.CallID, sipCallID, false, transport, req.Source())
	call.CallerUser = ask.FromUser
	tag, _ := dlg.InviteRequest.To().Params.Get("tag")
	call.key = dialogKey(sipCallID, tag)
	if offerErr != nil || ChooseCodec(offer, []string{decision.Codec}) == "" {
		call.log.Warn("cannot answer with the API's codec", "codec", decision.Codec, "offered", offer.Codecs, "error", offerErr)
		_ = dlg.Respond(488, "Not Acceptable Here", nil, sip.NewHeader("X-Voxagent-Reason", "codec_not_offered"))
		call.report("failed", 488, "codec_not_offered")
		return
	}
	if err := a.answer(call, dlg, offer, decision); err != nil {
		call.log.Error("call not answered", "error", err)
		a.calls.Remove(call)
		call.report("failed", 0, err.Error())
	}
}

// answer opens the bridge stream, then answers 200 OK and waits for the ACK.
func (a *App) answer(call *Call, dlg *sipgo.DialogServerSession, offer Offer, decision InviteDecision) error {
	codec := ChooseCodec(offer, []string{decision.Codec})
	conn, err := a.ports.Listen()
	if err != nil {
		_ = dlg.Respond(503, "Service Unavailable", nil, sip.NewHeader("X-Voxagent-Reason", "no_rtp_port"))
		return err
	}
	pt, _ := offer.PayloadType(codec)
	media := NewMedia(conn, codec, pt, offer.EventPT, call.log)
	stream, err := OpenStream(dlg.Context(), decision.StreamURL, startMessage{
		CallID: call.ID, Token: decision.Token, Codec: codec, SIPCallID: call.SIPCallID,
	}, call.log)
	if err != nil {
		media.Close()
		_ = dlg.Respond(503, "Service Unavailable", nil, sip.NewHeader("X-Voxagent-Reason", "bridge_unavailable"))
		return err
	}
	sdp, err := AnswerSDP(offer, codec, a.cfg.PublicHost, media.LocalPort())
	if err != nil {
		stream.Stop("error")
		media.Close()
		_ = dlg.Respond(488, "Not Acceptable Here", nil)
		return err
	}
	call.mu.Lock()
	call.dlg, call.localSDP = dlg, sdp
	call.remoteTarget = dlg.InviteRequest.Contact().Address
	call.mu.Unlock()
	if !a.calls.Add(call) {
		stream.Stop("error")
		media.Close()
		_ = dlg.Respond(500, "Server Internal Error", nil, sip.NewHeader("X-Voxagent-Reason", "duplicate_call_id"))
		return fmt.Errorf("call id %s is already held", call.ID)
	}
	call.connectMedia(media, stream)
	if err := media.Start(offer.Host, offer.Port); err != nil {
		call.End("error", false)
		_ = dlg.Respond(488, "Not Acceptable Here", nil)
		return err
	}
	call.answered.Store(true)
	stats.Answered.Add(1)
	call.log.Info("answering", "codec", codec, "rtp_port", media.LocalPort(), "to_user", dlg.InviteRequest.Recipient.User)
	if err := dlg.RespondSDP(sdp); err != nil {
		call.log.Warn("no ACK for 200 OK", "error", err)
		call.End("error", true)
		return nil
	}
	call.report("in-progress", 200, "")
	return nil
}

// inviteRequest is what the API is told about an INVITE.
func inviteRequest(req *sip.Request, transport string, codecs []string) InviteRequest {
	ask := InviteRequest{
		SIPCallID: req.CallID().Value(), Transport: transport, Method: "INVITE",
		URI: req.Recipient.String(), Codecs: codecs, ToUser: req.Recipient.User,
	}
	if ask.ToUser == "" && req.To() != nil {
		ask.ToUser = req.To().Address.User
	}
	if from := req.From(); from != nil {
		ask.FromUser = from.Address.User
		if from.DisplayName != "" {
			ask.FromDisplay = strp(from.DisplayName)
		}
	}
	if h := req.GetHeader("Authorization"); h != nil {
		ask.Authorization = strp(h.Value())
	}
	if host, port, err := net.SplitHostPort(req.Source()); err == nil {
		ask.SourceIP = host
		ask.SourcePort, _ = strconv.Atoi(port)
	}
	return ask
}

// onReInvite keeps the session as it is (session refresh, hold): 200 with our same SDP.
func (a *App) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	c := a.calls.ForRequest(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	c.mu.Lock()
	sdp := c.localSDP
	c.mu.Unlock()
	res := sip.NewSDPResponseFromRequest(req, sdp)
	contact := a.contact(c.Transport)
	res.AppendHeader(&contact)
	_ = tx.Respond(res)
}

func strp(s string) *string { return &s }
func intp(n int) *int       { return &n }
