// Command sipd is Voxagent's SIP endpoint: it answers and places SIP calls (G.711 over RTP)
// and moves their audio to the media bridge over a WebSocket; every decision is the platform
// API's. Configuration comes from SIPD_* (docs/telephony.md); logs are JSON lines on stderr.
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log) // sipgo logs through it (info and above: no message dumps)
	cfg, err := LoadConfig(os.Getenv)
	if err != nil {
		log.Error("bad configuration", "error", err)
		os.Exit(2)
	}
	if err := run(cfg, log); err != nil {
		log.Error("sipd stopped", "error", err)
		os.Exit(1)
	}
}

func run(cfg Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app, err := NewApp(cfg, log)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", cfg.ControlAddr)
	if err != nil {
		return err
	}
	control := &http.Server{Handler: app.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	sipErr := make(chan error, 1)
	go func() {
		sipErr <- app.Listen(ctx, func() {
			log.Info("sipd listening", "sip", cfg.SIPAddr, "control", cfg.ControlAddr, "public_host", cfg.PublicHost,
				"rtp_ports", []int{cfg.RTPMin, cfg.RTPMax}, "api", cfg.APIURL)
			go func() {
				if err := control.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
					sipErr <- err
				}
			}()
		})
	}()
	select {
	case err = <-sipErr:
	case <-ctx.Done():
	}
	log.Info("stopping: hanging up the calls", "calls", app.calls.Len())
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = control.Shutdown(shutdown)
	for _, c := range app.calls.All() {
		go c.End("hangup", true)
	}
	for app.calls.Len() > 0 && shutdown.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	app.ua.Close()
	return err
}
