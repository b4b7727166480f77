package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Platform is the client of the platform API's /api/sip/* routes (Bearer SIPD_SECRET).
type Platform struct {
	base    string
	secret  string
	timeout time.Duration
	http    *http.Client
	log     *slog.Logger
}

func NewPlatform(cfg Config, log *slog.Logger) *Platform {
	return &Platform{base: cfg.APIURL, secret: cfg.Secret, timeout: cfg.APITimeout, http: &http.Client{}, log: log}
}

// InviteRequest is what sipd tells the API about an INVITE.
type InviteRequest struct {
	SIPCallID     string   `json:"sip_call_id"`
	ToUser        string   `json:"to_user"`
	FromUser      string   `json:"from_user"`
	FromDisplay   *string  `json:"from_display"`
	SourceIP      string   `json:"source_ip"`
	SourcePort    int      `json:"source_port"`
	Transport     string   `json:"transport"`
	Authorization *string  `json:"authorization"`
	Method        string   `json:"method"`
	URI           string   `json:"uri"`
	Codecs        []string `json:"codecs"`
}

// InviteDecision is the API's answer: connect, challenge or refuse.
type InviteDecision struct {
	Action    string `json:"action"`
	CallID    string `json:"call_id"`
	StreamURL string `json:"stream_url"`
	Token     string `json:"token"`
	Codec     string `json:"codec"`
	Realm     string `json:"realm"`
	Nonce     string `json:"nonce"`
	Status    int    `json:"status"`
	Reason    string `json:"reason"`
}

// StatusReport is one change of a call's state.
type StatusReport struct {
	CallID    string  `json:"call_id"`
	SIPCallID string  `json:"sip_call_id"`
	Status    string  `json:"status"`
	SIPCode   *int    `json:"sip_code"`
	Reason    *string `json:"reason"`
}

// TransferReport is the outcome of a REFER.
type TransferReport struct {
	CallID  string  `json:"call_id"`
	Outcome string  `json:"outcome"`
	SIPCode *int    `json:"sip_code"`
	Reason  *string `json:"reason"`
}

// Invite asks the API what to do with an INVITE.
func (p *Platform) Invite(ctx context.Context, req InviteRequest) (InviteDecision, error) {
	var d InviteDecision
	err := p.post(ctx, "/api/sip/invite", req, &d)
	if err == nil && d.Action != "connect" && d.Action != "challenge" && d.Action != "refuse" {
		err = fmt.Errorf("unknown action %q", d.Action)
	}
	return d, err
}

// Status reports a call's state; failures are logged, not returned (the call goes on).
func (p *Platform) Status(report StatusReport) {
	if err := p.post(context.Background(), "/api/sip/status", report, nil); err != nil {
		p.log.Warn("status report failed", "call_id", report.CallID, "status", report.Status, "error", err)
	}
}

// Transfer reports a REFER's outcome.
func (p *Platform) Transfer(report TransferReport) {
	if err := p.post(context.Background(), "/api/sip/transfer", report, nil); err != nil {
		p.log.Warn("transfer report failed", "call_id", report.CallID, "outcome", report.Outcome, "error", err)
	}
}

func (p *Platform) post(ctx context.Context, path string, body any, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.secret)
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("POST %s: HTTP %d: %.200s", path, resp.StatusCode, text)
	}
	if out != nil {
		if err := json.Unmarshal(text, out); err != nil {
			return fmt.Errorf("POST %s: bad JSON answer: %w", path, err)
		}
	}
	return nil
}
