package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// transferState is a REFER in flight: its outcome is reported once.
type transferState struct {
	target   string
	reported chan struct{}
	outcome  string // "" while in flight; guarded by the call's mu
	warm     bool   // a consult leg (warm.go), not a REFER
	phase    string // of a warm transfer: dialing, consulting, joined, over; guarded by mu
}

// ReferTarget turns a transfer target into a Refer-To URI: sip: and sips: URIs as they are,
// tel:<number> to sip:<number>@peer (the trunk or peer the call came from or went to).
func ReferTarget(target, peer string) (string, error) {
	target = strings.TrimSpace(target)
	lower := strings.ToLower(target)
	switch {
	case strings.HasPrefix(lower, "sip:") || strings.HasPrefix(lower, "sips:"):
		var uri sip.Uri
		if err := sip.ParseUri(target, &uri); err != nil || uri.Host == "" {
			return "", fmt.Errorf("target %q is not a SIP URI", target)
		}
		return target, nil
	case strings.HasPrefix(lower, "tel:"):
		number := strings.TrimSpace(target[4:])
		if i := strings.IndexByte(number, ';'); i >= 0 {
			number = number[:i]
		}
		if number == "" || strings.ContainsAny(number, " <>@\"") {
			return "", fmt.Errorf("target %q is not a tel: number", target)
		}
		return "sip:" + number + "@" + peer, nil
	}
	return "", fmt.Errorf("target %q: use sip:user@host or tel:+number", target)
}

// SipfragStatus reads the status code of a NOTIFY's message/sipfrag body ("SIP/2.0 200 OK").
func SipfragStatus(body []byte) int {
	line, _, _ := strings.Cut(strings.TrimLeft(string(body), "\r\n "), "\n")
	fields := strings.Fields(line)
	if len(fields) < 2 || !strings.HasPrefix(strings.ToUpper(fields[0]), "SIP/") {
		return 0
	}
	code, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0
	}
	return code
}

var errTransferBusy = errors.New("a transfer of this call is already under way")

// Transfer sends REFER (Refer-To target) in the call's dialog; the outcome arrives by NOTIFY.
func (c *Call) Transfer(target string) error {
	c.mu.Lock()
	dlg, remote := c.dlg, c.remoteTarget
	c.mu.Unlock()
	if dlg == nil || !c.answered.Load() {
		return fmt.Errorf("the call is not answered yet")
	}
	referTo, err := ReferTarget(target, c.Peer)
	if err != nil {
		return err
	}
	state := &transferState{target: referTo, reported: make(chan struct{})}
	c.mu.Lock()
	if prev := c.transfer.Load(); prev != nil && prev.outcome == "" {
		c.mu.Unlock()
		return errTransferBusy
	}
	c.transfer.Store(state)
	c.mu.Unlock()
	req := sip.NewRequest(sip.REFER, remote)
	req.AppendHeader(sip.NewHeader("Refer-To", "<"+referTo+">"))
	contact := c.app.contact(c.Transport)
	req.AppendHeader(sip.NewHeader("Referred-By", "<"+contact.Address.String()+">"))
	req.AppendHeader(&contact)
	c.log.Info("sending REFER", "refer_to", referTo)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		res, err := dlg.Do(ctx, req)
		switch {
		case err != nil:
			c.transferDone("failed", 0, "no answer to REFER: "+err.Error())
		case res.StatusCode >= 300:
			c.transferDone("failed", res.StatusCode, res.Reason)
		default:
			c.log.Info("REFER accepted", "status", res.StatusCode)
			// A peer that never sends NOTIFY: the outcome is unknown, call it failed.
			select {
			case <-state.reported:
			case <-c.ended:
			case <-time.After(60 * time.Second):
				c.transferDone("failed", 0, "no NOTIFY for the REFER")
			}
		}
	}()
	return nil
}

// referProgress takes the status of a NOTIFY sipfrag.
func (c *Call) referProgress(code int) {
	c.log.Info("REFER progress", "status", code)
	switch {
	case code >= 300:
		c.transferDone("failed", code, reasonPhrase(code))
	case code >= 200:
		c.transferDone("completed", code, "")
		go c.End("transfer", true) // the peer has the target now: our leg ends
	}
}

func (c *Call) transferDone(outcome string, code int, reason string) {
	state := c.transfer.Load()
	c.mu.Lock()
	if state == nil || state.outcome != "" {
		c.mu.Unlock()
		return
	}
	state.outcome = outcome
	c.mu.Unlock()
	close(state.reported)
	report := TransferReport{CallID: c.ID, Outcome: outcome}
	if code > 0 {
		report.SIPCode = intp(code)
	}
	if reason != "" {
		report.Reason = strp(reason)
	}
	c.log.Info("transfer outcome", "outcome", outcome, "sip_code", code)
	c.app.platform.Transfer(report)
}

// endReason is the stop reason when the peer hangs up: transfer after a completed REFER.
func (c *Call) endReason(fallback string) string {
	if state := c.transfer.Load(); state != nil {
		c.mu.Lock()
		outcome := state.outcome
		c.mu.Unlock()
		if outcome == "completed" {
			return "transfer"
		}
	}
	return fallback
}

var _ dialog = (*sipgo.DialogServerSession)(nil)
var _ dialog = (*sipgo.DialogClientSession)(nil)
