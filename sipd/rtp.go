package main

import (
	"encoding/binary"
	"errors"
	"strings"
)

// RTPHeader is the part of an RTP packet (RFC 3550) sipd reads and writes.
type RTPHeader struct {
	Marker      bool
	PayloadType uint8
	Sequence    uint16
	Timestamp   uint32
	SSRC        uint32
}

var errShortRTP = errors.New("not an RTP packet")

// ParseRTP splits a packet into its header and payload (CSRCs, extension and padding skipped).
func ParseRTP(packet []byte) (RTPHeader, []byte, error) {
	var h RTPHeader
	if len(packet) < 12 || packet[0]>>6 != 2 {
		return h, nil, errShortRTP
	}
	h.Marker = packet[1]&0x80 != 0
	h.PayloadType = packet[1] & 0x7F
	h.Sequence = binary.BigEndian.Uint16(packet[2:4])
	h.Timestamp = binary.BigEndian.Uint32(packet[4:8])
	h.SSRC = binary.BigEndian.Uint32(packet[8:12])
	offset := 12 + 4*int(packet[0]&0x0F)
	if packet[0]&0x10 != 0 { // header extension
		if len(packet) < offset+4 {
			return h, nil, errShortRTP
		}
		offset += 4 + 4*int(binary.BigEndian.Uint16(packet[offset+2:offset+4]))
	}
	end := len(packet)
	if packet[0]&0x20 != 0 && end > 0 { // padding: its count is the last byte
		end -= int(packet[end-1])
	}
	if offset > end {
		return h, nil, errShortRTP
	}
	return h, packet[offset:end], nil
}

// AppendRTP writes the 12-byte header of h, then payload, to buf.
func AppendRTP(buf []byte, h RTPHeader, payload []byte) []byte {
	second := h.PayloadType & 0x7F
	if h.Marker {
		second |= 0x80
	}
	buf = append(buf, 0x80, second)
	buf = binary.BigEndian.AppendUint16(buf, h.Sequence)
	buf = binary.BigEndian.AppendUint32(buf, h.Timestamp)
	buf = binary.BigEndian.AppendUint32(buf, h.SSRC)
	return append(buf, payload...)
}

const dtmfDigits = "0123456789*#ABCD"

// DTMFDetector turns RFC 4733/2833 telephone-event packets into one digit per key press.
// A press is a run of packets with one RTP timestamp; it is reported at its first packet with
// the end bit (the end packet is sent three times: the repeats are ignored).
type DTMFDetector struct {
	reported   bool
	reportedTS uint32
}

// Feed takes one telephone-event payload and its RTP timestamp; returns the digit when the
// press just ended, else "".
func (d *DTMFDetector) Feed(timestamp uint32, payload []byte) string {
	if len(payload) < 4 {
		return ""
	}
	event, end := payload[0], payload[1]&0x80 != 0
	if !end || (d.reported && d.reportedTS == timestamp) {
		return ""
	}
	d.reported, d.reportedTS = true, timestamp
	if int(event) >= len(dtmfDigits) {
		return "" // a tone other than a key (flash, fax...)
	}
	return string(dtmfDigits[event])
}

// DTMFFromInfo reads a SIP INFO body: application/dtmf-relay ("Signal=5") or application/dtmf ("5").
func DTMFFromInfo(contentType string, body []byte) string {
	text := string(body)
	digit := ""
	switch contentType {
	case "application/dtmf-relay":
		for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if len(line) > 7 && (line[:7] == "Signal=" || line[:7] == "signal=") {
				digit = strings.TrimSpace(line[7:])
			}
		}
	case "application/dtmf":
		digit = strings.TrimSpace(text)
	}
	if len(digit) == 1 {
		for i := 0; i < len(dtmfDigits); i++ {
			if dtmfDigits[i] == digit[0] || (digit[0] >= 'a' && digit[0] <= 'd' && dtmfDigits[i] == digit[0]-32) {
				return string(dtmfDigits[i])
			}
		}
	}
	if digit == "10" {
		return "*"
	}
	if digit == "11" {
		return "#"
	}
	return ""
}
