package main

import (
	"bytes"
	"testing"
)

func TestRTPRoundTrip(t *testing.T) {
	h := RTPHeader{Marker: true, PayloadType: 8, Sequence: 65535, Timestamp: 4000000000, SSRC: 7}
	packet := AppendRTP(nil, h, []byte{1, 2, 3})
	got, payload, err := ParseRTP(packet)
	if err != nil || got != h || !bytes.Equal(payload, []byte{1, 2, 3}) {
		t.Fatalf("%+v %v %v", got, payload, err)
	}
}

func TestRTPSkipsCSRCsExtensionAndPadding(t *testing.T) {
	packet := []byte{0x80 | 0x20 | 0x10 | 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1}
	packet = append(packet, 9, 9, 9, 9)                   // one CSRC
	packet = append(packet, 0xBE, 0xDE, 0, 1, 5, 5, 5, 5) // extension of one word
	packet = append(packet, 0xAA, 0xBB, 0, 2)             // payload, then 2 bytes of padding
	_, payload, err := ParseRTP(packet)
	if err != nil || !bytes.Equal(payload, []byte{0xAA, 0xBB}) {
		t.Fatalf("%v %v", payload, err)
	}
	if _, _, err := ParseRTP([]byte{0x80, 0}); err == nil {
		t.Fatal("short packet parsed")
	}
}

func event(digit byte, end bool) []byte {
	flags := byte(10)
	if end {
		flags |= 0x80
	}
	return []byte{digit, flags, 0, 160}
}

func TestDTMFOncePerKeyPressAtItsEnd(t *testing.T) {
	var d DTMFDetector
	var got []string
	feed := func(ts uint32, p []byte) {
		if digit := d.Feed(ts, p); digit != "" {
			got = append(got, digit)
		}
	}
	feed(1000, event(5, false))
	feed(1000, event(5, false))
	feed(1000, event(5, true))
	feed(1000, event(5, true)) // the end packet is repeated
	feed(1000, event(5, true))
	feed(2000, event(11, false))
	feed(2000, event(11, true))
	feed(3000, event(5, true)) // same key again: a new press (new timestamp)
	if len(got) != 3 || got[0] != "5" || got[1] != "#" || got[2] != "5" {
		t.Fatalf("%v", got)
	}
	if d.Feed(4000, []byte{1}) != "" || d.Feed(5000, event(16, true)) != "" {
		t.Fatal("not a key press")
	}
}

func TestDTMFFromSIPInfo(t *testing.T) {
	cases := map[string][2]string{
		"application/dtmf-relay|Signal=5\r\nDuration=160\r\n": {"5", ""},
		"application/dtmf-relay|Signal= *\r\n":                {"*", ""},
		"application/dtmf-relay|Signal=11\r\n":                {"#", ""},
		"application/dtmf|a":                                  {"A", ""},
		"text/plain|5":                                        {"", ""},
	}
	for in, want := range cases {
		ct, body, _ := bytes.Cut([]byte(in), []byte("|"))
		if got := DTMFFromInfo(string(ct), body); got != want[0] {
			t.Errorf("%q: %q", in, got)
		}
	}
}
