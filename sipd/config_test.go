package main

import (
	"testing"
	"time"
)

func env(values map[string]string) func(string) string {
	return func(name string) string { return values[name] }
}

func TestConfigDefaultsNeedOnlyTheSecret(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{"SIPD_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SIPAddr != "127.0.0.1:5070" || cfg.ControlAddr != "127.0.0.1:5071" || cfg.APIURL != "http://127.0.0.1:8000" {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg.RTPMin != 20000 || cfg.RTPMax != 20999 || cfg.Realm != "voxagent" || cfg.APITimeout != 5*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg.SIPHost() != "127.0.0.1" || cfg.SIPPort() != 5070 {
		t.Fatalf("host/port: %s %d", cfg.SIPHost(), cfg.SIPPort())
	}
}

func TestConfigRefusesAMissingSecret(t *testing.T) {
	if _, err := LoadConfig(env(nil)); err == nil {
		t.Fatal("no secret accepted")
	}
}

func TestConfigReadsEveryVariable(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{
		"SIPD_SECRET": "s", "SIPD_SIP_ADDR": "0.0.0.0:5080", "SIPD_CONTROL_ADDR": "127.0.0.1:6000",
		"SIPD_API_URL": "http://api:9000/", "SIPD_PUBLIC_HOST": "203.0.113.5", "SIPD_RTP_PORTS": "30001-30010",
		"SIPD_REALM": "r", "SIPD_API_TIMEOUT": "2.5",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIURL != "http://api:9000" || cfg.RTPMin != 30002 || cfg.RTPMax != 30010 || cfg.APITimeout != 2500*time.Millisecond {
		t.Fatalf("%+v", cfg)
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	for name, value := range map[string]string{
		"SIPD_SIP_ADDR": "5070", "SIPD_CONTROL_ADDR": ":5071", "SIPD_API_URL": "ftp://x",
		"SIPD_RTP_PORTS": "20000", "SIPD_API_TIMEOUT": "-1",
	} {
		if _, err := LoadConfig(env(map[string]string{"SIPD_SECRET": "s", name: value})); err == nil {
			t.Errorf("%s=%q accepted", name, value)
		}
	}
}

func TestPortRanges(t *testing.T) {
	for text, want := range map[string][2]int{"20000-20999": {20000, 20999}, " 3001 - 3003 ": {3002, 3003}} {
		lo, hi, err := ParsePortRange(text)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("%q: %d %d %v", text, lo, hi, err)
		}
	}
	for _, text := range []string{"", "a-b", "20999-20000", "80-90", "20000-70000", "3001-3001"} {
		if _, _, err := ParsePortRange(text); err == nil {
			t.Errorf("%q accepted", text)
		}
	}
}
