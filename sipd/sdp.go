package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// The G.711 codecs sipd speaks, by name, with their static RTP payload types.
var codecPayloadTypes = map[string]uint8{"PCMU": 0, "PCMA": 8}

// silenceByte is one sample of digital silence in each codec.
func silenceByte(codec string) byte {
	if codec == "PCMA" {
		return 0xD5
	}
	return 0xFF
}

// Offer is what sipd needs from a remote SDP (an offer, or the answer to our offer).
type Offer struct {
	Host     string   // c= address of the audio stream
	Port     int      // m=audio port (0: stream refused)
	Codecs   []string // known and unknown codecs, in the offer's order (PCMU, PCMA, opus...)
	payloads map[string]uint8
	EventPT  int // telephone-event/8000 payload type, -1 when not offered
}

// PayloadType of codec in this SDP (static for G.711 unless remapped).
func (o Offer) PayloadType(codec string) (uint8, bool) {
	pt, ok := o.payloads[codec]
	return pt, ok
}

// ParseSDP reads the first audio stream of an SDP body.
func ParseSDP(body []byte) (Offer, error) {
	o := Offer{payloads: map[string]uint8{}, EventPT: -1}
	var sessionHost, mediaHost string
	var formats []string
	names := map[string]string{}
	inAudio, seenAudio := false, false
	for _, raw := range strings.Split(string(body), "\n") {
		line := strings.TrimRight(raw, "\r ")
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		kind, value := line[0], line[2:]
		switch kind {
		case 'm':
			inAudio = false
			fields := strings.Fields(value)
			if seenAudio || len(fields) < 4 || fields[0] != "audio" {
				continue
			}
			port, err := strconv.Atoi(fields[1])
			if err != nil || port < 0 || port > 65535 {
				return o, fmt.Errorf("bad m=audio port %q", fields[1])
			}
			o.Port, formats, inAudio, seenAudio = port, fields[3:], true, true
		case 'c':
			fields := strings.Fields(value)
			if len(fields) < 3 {
				continue
			}
			if inAudio {
				mediaHost = fields[2]
			} else if !seenAudio {
				sessionHost = fields[2]
			}
		case 'a':
			if !inAudio || !strings.HasPrefix(value, "rtpmap:") {
				continue
			}
			pt, encoding, ok := strings.Cut(strings.TrimPrefix(value, "rtpmap:"), " ")
			if ok {
				names[pt] = strings.TrimSpace(encoding)
			}
		}
	}
	if !seenAudio {
		return o, fmt.Errorf("no m=audio line")
	}
	o.Host = mediaHost
	if o.Host == "" {
		o.Host = sessionHost
	}
	if o.Host == "" {
		return o, fmt.Errorf("no c= address for the audio stream")
	}
	for _, f := range formats {
		pt, err := strconv.Atoi(f)
		if err != nil || pt < 0 || pt > 127 {
			continue
		}
		name, rate := codecOf(pt, names[f])
		switch {
		case strings.EqualFold(name, "telephone-event") && rate == "8000":
			if o.EventPT < 0 {
				o.EventPT = pt
			}
		case name != "":
			name = strings.ToUpper(name)
			if _, known := codecPayloadTypes[name]; known && rate != "8000" {
				continue
			}
			if _, dup := o.payloads[name]; !dup {
				o.payloads[name] = uint8(pt)
				o.Codecs = append(o.Codecs, name)
			}
		}
	}
	return o, nil
}

// codecOf names a payload type from its rtpmap ("PCMU/8000") or, for static types, the RFC 3551 table.
func codecOf(pt int, rtpmap string) (string, string) {
	if rtpmap != "" {
		name, rest, _ := strings.Cut(rtpmap, "/")
		rate, _, _ := strings.Cut(rest, "/")
		return name, rate
	}
	switch pt {
	case 0:
		return "PCMU", "8000"
	case 8:
		return "PCMA", "8000"
	}
	return "", ""
}

// ChooseCodec picks the first of preference that the remote offered ("" when none).
func ChooseCodec(offer Offer, preference []string) string {
	for _, want := range preference {
		if _, ok := offer.payloads[strings.ToUpper(want)]; ok {
			return strings.ToUpper(want)
		}
	}
	return ""
}

// OfferedG711 lists the offered codecs sipd can take, in the offer's order.
func OfferedG711(offer Offer) []string {
	out := []string{}
	for _, c := range offer.Codecs {
		if _, ok := codecPayloadTypes[c]; ok {
			out = append(out, c)
		}
	}
	return out
}

// SDPMedia is one side's audio stream description.
type SDPMedia struct {
	Host    string
	Port    int
	Codecs  []string // G.711 names, in preference order
	PTs     []uint8  // their payload types
	EventPT int      // telephone-event payload type, -1 for none
}

// BuildSDP writes a session description for one sendrecv audio stream.
func BuildSDP(m SDPMedia) []byte {
	session := rand.Uint32() >> 1
	fmts := []string{}
	for _, pt := range m.PTs {
		fmts = append(fmts, strconv.Itoa(int(pt)))
	}
	if m.EventPT >= 0 {
		fmts = append(fmts, strconv.Itoa(m.EventPT))
	}
	lines := []string{
		"v=0",
		fmt.Sprintf("o=sipd %d %d IN IP4 %s", session, session, m.Host),
		"s=voxagent",
		"c=IN IP4 " + m.Host,
		"t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP %s", m.Port, strings.Join(fmts, " ")),
	}
	for i, c := range m.Codecs {
		lines = append(lines, fmt.Sprintf("a=rtpmap:%d %s/8000", m.PTs[i], c))
	}
	if m.EventPT >= 0 {
		lines = append(lines,
			fmt.Sprintf("a=rtpmap:%d telephone-event/8000", m.EventPT),
			fmt.Sprintf("a=fmtp:%d 0-16", m.EventPT))
	}
	lines = append(lines, "a=ptime:20", "a=sendrecv")
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// AnswerSDP answers offer with codec (which it offered) and its telephone-event type, if any.
func AnswerSDP(offer Offer, codec, host string, port int) ([]byte, error) {
	pt, ok := offer.PayloadType(codec)
	if !ok {
		return nil, fmt.Errorf("codec %s was not offered", codec)
	}
	return BuildSDP(SDPMedia{Host: host, Port: port, Codecs: []string{codec}, PTs: []uint8{pt}, EventPT: offer.EventPT}), nil
}

// OfferSDP offers the G.711 codecs of preference (PCMU, PCMA by default) and telephone-event 101.
func OfferSDP(preference []string, host string, port int) ([]byte, error) {
	m := SDPMedia{Host: host, Port: port, EventPT: 101}
	for _, c := range preference {
		c = strings.ToUpper(c)
		pt, ok := codecPayloadTypes[c]
		if !ok {
			return nil, fmt.Errorf("unsupported codec %q (PCMU or PCMA)", c)
		}
		m.Codecs, m.PTs = append(m.Codecs, c), append(m.PTs, pt)
	}
	if len(m.Codecs) == 0 {
		m.Codecs, m.PTs = []string{"PCMU", "PCMA"}, []uint8{0, 8}
	}
	return BuildSDP(m), nil
}
