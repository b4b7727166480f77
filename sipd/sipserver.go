package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// App is sipd: the SIP user agent, its calls, the platform API client.
type App struct {
	cfg      Config
	log      *slog.Logger
	ua       *sipgo.UserAgent
	server   *sipgo.Server
	clients  map[string]*sipgo.Client // by transport
	calls    *Calls
	platform *Platform
	ports    *PortPool
}

func NewApp(cfg Config, log *slog.Logger) (*App, error) {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("voxagent-sipd"), sipgo.WithUserAgentHostname(cfg.PublicHost))
	if err != nil {
		return nil, err
	}
	server, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log.With("component", "sip")))
	if err != nil {
		return nil, err
	}
	// UDP requests leave from the listening socket (peers answer the address in Via); TCP
	// ones from a connection of their own, answered on it.
	publicAddr := fmt.Sprintf("%s:%d", cfg.PublicHost, cfg.SIPPort())
	udp, err := sipgo.NewClient(ua, sipgo.WithClientAddr(publicAddr), sipgo.WithClientConnectionAddr(cfg.SIPAddr),
		sipgo.WithClientLogger(log.With("component", "sip")))
	if err != nil {
		return nil, err
	}
	tcp, err := sipgo.NewClient(ua, sipgo.WithClientHostname(cfg.PublicHost), sipgo.WithClientLogger(log.With("component", "sip")))
	if err != nil {
		return nil, err
	}
	app := &App{
		cfg: cfg, log: log, ua: ua, server: server,
		clients:  map[string]*sipgo.Client{"udp": udp, "tcp": tcp},
		calls:    NewCalls(),
		platform: NewPlatform(cfg, log),
		ports:    NewPortPool(cfg.SIPHost(), cfg.RTPMin, cfg.RTPMax),
	}
	server.OnInvite(app.onInvite)
	server.OnAck(app.onAck)
	server.OnBye(app.onBye)
	server.OnInfo(app.onInfo)
	server.OnNotify(app.onNotify)
	server.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		respond(tx, req, 200, "OK")
	})
	return app, nil
}

// Listen serves SIP on UDP and TCP until ctx ends; ready is called once both listen.
func (a *App) Listen(ctx context.Context, ready func()) error {
	errs := make(chan error, 2)
	waiting := make(chan struct{}, 2)
	for _, network := range []string{"udp", "tcp"} {
		network := network
		readyCtx := context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyFuncCtxValue(func(string, string) {
			waiting <- struct{}{}
		}))
		go func() { errs <- a.server.ListenAndServe(readyCtx, network, a.cfg.SIPAddr) }()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-waiting:
		case err := <-errs:
			return fmt.Errorf("SIP listener on %s: %w", a.cfg.SIPAddr, err)
		}
	}
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// contact is our Contact for a transport.
func (a *App) contact(transport string) sip.ContactHeader {
	uri := sip.Uri{Scheme: "sip", User: "sipd", Host: a.cfg.PublicHost, Port: a.cfg.SIPPort()}
	if transport == "tcp" {
		uri.UriParams = sip.NewParams()
		uri.UriParams.Add("transport", "tcp")
	}
	return sip.ContactHeader{Address: uri}
}

func (a *App) dialogUA(transport string) *sipgo.DialogUA {
	return &sipgo.DialogUA{Client: a.clients[transport], ContactHDR: a.contact(transport)}
}

func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, headers ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

func transportOf(req *sip.Request) string {
	if strings.EqualFold(req.Transport(), "tcp") {
		return "tcp"
	}
	return "udp"
}

func (a *App) onAck(req *sip.Request, tx sip.ServerTransaction) {
	c := a.calls.ForRequest(req)
	if c == nil {
		return
	}
	c.mu.Lock()
	dlg := c.dlg
	c.mu.Unlock()
	if d, ok := dlg.(*sipgo.DialogServerSession); ok {
		_ = d.ReadAck(req, tx)
	}
}

func (a *App) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := a.calls.ForRequest(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	respond(tx, req, 200, "OK")
	if c.isConsult(req) {
		c.consultHungUp()
		return
	}
	c.log.Info("the peer hangs up (BYE)")
	c.End(c.endReason("hangup"), false)
}

func (a *App) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	c := a.calls.ForRequest(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	respond(tx, req, 200, "OK")
	contentType := ""
	if h := req.ContentType(); h != nil {
		contentType = strings.ToLower(strings.TrimSpace(strings.SplitN(h.Value(), ";", 2)[0]))
	}
	if digit := DTMFFromInfo(contentType, req.Body()); digit != "" {
		c.infoDTMF(digit)
	}
}

func (a *App) onNotify(req *sip.Request, tx sip.ServerTransaction) {
	c := a.calls.ForRequest(req)
	if c == nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	respond(tx, req, 200, "OK")
	if event := req.GetHeader("Event"); event == nil || !strings.HasPrefix(strings.ToLower(strings.TrimSpace(event.Value())), "refer") {
		return
	}
	c.referProgress(SipfragStatus(req.Body()))
}
