package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// ControlHandler is the HTTP control API the platform calls (Bearer SIPD_SECRET, except /health).
func (a *App) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "calls": a.calls.Len()})
	})
	mux.HandleFunc("GET /stats", a.authorized(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, stats.Snapshot(a.calls.Len()))
	}))
	mux.HandleFunc("POST /stats/reset", a.authorized(func(w http.ResponseWriter, r *http.Request) {
		stats.Reset()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /calls", a.authorized(a.postCall))
	mux.HandleFunc("POST /calls/{call_id}/transfer", a.authorized(a.postTransfer))
	mux.HandleFunc("POST /calls/{call_id}/hangup", a.authorized(a.postHangup))
	return mux
}

func (a *App) authorized(next http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + a.cfg.Secret)
	return func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeError(w, http.StatusUnauthorized, "invalid_sip_secret", "send Authorization: Bearer <SIPD_SECRET>")
			return
		}
		next(w, r)
	}
}

func (a *App) postCall(w http.ResponseWriter, r *http.Request) {
	var body OutboundRequest
	if err := readJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := body.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	call, err := a.Dial(body)
	if errors.Is(err, errCallExists) {
		writeError(w, http.StatusConflict, "call_exists", "sipd already holds a call with this call_id")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"sip_call_id": call.SIPCallID})
}

func (a *App) postTransfer(w http.ResponseWriter, r *http.Request) {
	call := a.calls.Get(r.PathValue("call_id"))
	if call == nil {
		writeError(w, http.StatusNotFound, "unknown_call", "sipd holds no call with this id")
		return
	}
	var body TransferRequest
	if err := readJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := body.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	var err error
	if body.Mode == "warm" { // answers once the target answered or the consult failed
		err = call.WarmTransfer(body.Target, time.Duration(body.TimeoutSeconds*float64(time.Second)))
	} else {
		err = call.Transfer(body.Target)
	}
	var failed *ConsultFailed
	switch {
	case errors.As(err, &failed):
		out := map[string]any{"code": "transfer_failed", "message": failed.Error()}
		if failed.Code > 0 {
			out["sip_code"] = failed.Code
		}
		writeJSON(w, http.StatusBadGateway, out)
	case err != nil:
		status, code := http.StatusBadRequest, "invalid_target"
		if errors.Is(err, errTransferBusy) || strings.Contains(err.Error(), "not answered") {
			status, code = http.StatusConflict, "transfer_not_possible"
		}
		writeError(w, status, code, err.Error())
	case body.Mode == "warm":
		writeJSON(w, http.StatusOK, map[string]string{"state": "consulting"})
	default:
		writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
	}
}

func (a *App) postHangup(w http.ResponseWriter, r *http.Request) {
	call := a.calls.Get(r.PathValue("call_id"))
	if call == nil {
		writeError(w, http.StatusNotFound, "unknown_call", "sipd holds no call with this id")
		return
	}
	call.log.Info("the platform hangs up")
	go call.End("hangup", true)
	w.WriteHeader(http.StatusNoContent)
}

func readJSON(r *http.Request, out any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	if err := dec.Decode(out); err != nil {
		return errors.New("the body must be a JSON object: " + err.Error())
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]string{"code": code, "message": message})
}
