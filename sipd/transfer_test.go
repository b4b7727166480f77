package main

import "testing"

func TestReferTargets(t *testing.T) {
	ok := map[string]string{
		"sip:desk@127.0.0.1:5090": "sip:desk@127.0.0.1:5090",
		"tel:+15551234567":        "sip:+15551234567@10.0.0.9:5060",
		"tel:+15551234567;ext=12": "sip:+15551234567@10.0.0.9:5060",
	}
	for in, want := range ok {
		if got, err := ReferTarget(in, "10.0.0.9:5060"); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "desk", "http://x", "tel:", "sip:"} {
		if _, err := ReferTarget(bad, "h:1"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSipfragStatus(t *testing.T) {
	for body, want := range map[string]int{"SIP/2.0 200 OK\r\n": 200, "SIP/2.0 100 Trying": 100, "SIP/2.0 486 Busy Here\r\n": 486, "": 0, "garbage": 0} {
		if got := SipfragStatus([]byte(body)); got != want {
			t.Errorf("%q: %d", body, got)
		}
	}
}

func TestOutboundStatusOfFinalAnswers(t *testing.T) {
	for code, want := range map[int]string{486: "busy", 600: "busy", 480: "no-answer", 408: "no-answer", 404: "failed", 503: "failed"} {
		if got := outboundStatus(code); got != want {
			t.Errorf("%d: %s", code, got)
		}
	}
}

func TestOutboundRequestValidation(t *testing.T) {
	good := OutboundRequest{CallID: "c", To: "sip:+1555@127.0.0.1:5090", FromUser: "+1666",
		Trunk: Trunk{Address: "127.0.0.1:5090"}, StreamURL: "ws://127.0.0.1:8765/streams/sip", Token: "t"}
	r := good
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Trunk.Transport != "udp" || r.TimeoutSeconds != 30 || len(r.CodecPreference) != 2 {
		t.Fatalf("defaults %+v", r)
	}
	bad := []func(*OutboundRequest){
		func(r *OutboundRequest) { r.CallID = "" },
		func(r *OutboundRequest) { r.To = "+1555" },
		func(r *OutboundRequest) { r.FromUser = "a b" },
		func(r *OutboundRequest) { r.Trunk.Address = "nohost" },
		func(r *OutboundRequest) { r.Trunk.Transport = "tls" },
		func(r *OutboundRequest) { r.StreamURL = "http://x" },
		func(r *OutboundRequest) { r.Token = "" },
		func(r *OutboundRequest) { r.CodecPreference = []string{"G729"} },
		func(r *OutboundRequest) { r.TimeoutSeconds = 9999 },
	}
	for i, change := range bad {
		r := good
		r.CodecPreference = nil
		change(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
}
