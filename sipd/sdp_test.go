package main

import (
	"reflect"
	"strings"
	"testing"
)

const baresipOffer = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n" +
	"m=audio 40000 RTP/AVP 8 0 96 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"

func TestOfferListsCodecsInOfferOrder(t *testing.T) {
	o, err := ParseSDP([]byte(baresipOffer))
	if err != nil {
		t.Fatal(err)
	}
	if o.Host != "10.0.0.1" || o.Port != 40000 || o.EventPT != 101 {
		t.Fatalf("%+v", o)
	}
	if !reflect.DeepEqual(o.Codecs, []string{"PCMA", "PCMU", "OPUS"}) || !reflect.DeepEqual(OfferedG711(o), []string{"PCMA", "PCMU"}) {
		t.Fatalf("codecs %v", o.Codecs)
	}
}

func TestStaticPayloadTypesNeedNoRtpmap(t *testing.T) {
	o, err := ParseSDP([]byte("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 0 8\n"))
	if err != nil || !reflect.DeepEqual(o.Codecs, []string{"PCMU", "PCMA"}) || o.EventPT != -1 {
		t.Fatalf("%+v %v", o, err)
	}
}

func TestMediaLevelAddressWins(t *testing.T) {
	o, err := ParseSDP([]byte("v=0\nc=IN IP4 1.1.1.1\nm=audio 5000 RTP/AVP 0\nc=IN IP4 2.2.2.2\n"))
	if err != nil || o.Host != "2.2.2.2" {
		t.Fatalf("%+v %v", o, err)
	}
}

func TestBadOffersAreErrors(t *testing.T) {
	for _, body := range []string{"", "v=0\nm=video 5000 RTP/AVP 96\n", "v=0\nm=audio 5000 RTP/AVP 0\n", "v=0\nc=IN IP4 1.1.1.1\nm=audio x RTP/AVP 0\n"} {
		if _, err := ParseSDP([]byte(body)); err == nil {
			t.Errorf("%q parsed", body)
		}
	}
}

func TestChooseCodecFollowsPreference(t *testing.T) {
	o, _ := ParseSDP([]byte(baresipOffer))
	if got := ChooseCodec(o, []string{"pcmu", "PCMA"}); got != "PCMU" {
		t.Fatal(got)
	}
	only, _ := ParseSDP([]byte("v=0\nc=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 96\na=rtpmap:96 opus/48000/2\n"))
	if got := ChooseCodec(only, []string{"PCMU", "PCMA"}); got != "" {
		t.Fatal(got)
	}
}

func TestAnswerKeepsTheOfferedPayloadTypes(t *testing.T) {
	o, _ := ParseSDP([]byte(strings.ReplaceAll(baresipOffer, "101", "97")))
	body, err := AnswerSDP(o, "PCMU", "127.0.0.1", 20002)
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{"c=IN IP4 127.0.0.1\r\n", "m=audio 20002 RTP/AVP 0 97\r\n", "a=rtpmap:0 PCMU/8000", "a=rtpmap:97 telephone-event/8000", "a=sendrecv"} {
		if !strings.Contains(text, want) {
			t.Errorf("answer lacks %q:\n%s", want, text)
		}
	}
	back, _ := ParseSDP(body)
	if !reflect.DeepEqual(back.Codecs, []string{"PCMU"}) || back.EventPT != 97 {
		t.Fatalf("%+v", back)
	}
	if _, err := AnswerSDP(o, "G729", "127.0.0.1", 1); err == nil {
		t.Fatal("answered with a codec never offered")
	}
}

func TestOfferHasPreferenceAndTelephoneEvent(t *testing.T) {
	body, err := OfferSDP([]string{"PCMA", "PCMU"}, "192.0.2.1", 20010)
	if err != nil || !strings.Contains(string(body), "m=audio 20010 RTP/AVP 8 0 101\r\n") {
		t.Fatalf("%s %v", body, err)
	}
	if _, err := OfferSDP([]string{"G722"}, "h", 1); err == nil {
		t.Fatal("G722 offered")
	}
}
