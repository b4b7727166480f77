package main

import (
	"bytes"
	"reflect"
	"testing"
)

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func TestPlayerSendsWholeFramesInOrder(t *testing.T) {
	p := NewPlayer("PCMU")
	p.Write(fill(200, 1))
	p.Write(fill(120, 2))
	f1, _ := p.Tick()
	f2, _ := p.Tick()
	if !bytes.Equal(f1, fill(160, 1)) || !bytes.Equal(f2, append(fill(40, 1), fill(120, 2)...)) {
		t.Fatalf("%v %v", f1, f2)
	}
	if f3, _ := p.Tick(); f3 != nil {
		t.Fatal("nothing queued, yet a frame")
	}
}

func TestMarkIsDueOnceTheAudioBeforeItIsSent(t *testing.T) {
	p := NewPlayer("PCMU")
	p.Write(fill(320, 1))
	p.Mark("a")
	p.Write(fill(160, 2))
	p.Mark("b")
	if _, marks := p.Tick(); marks != nil {
		t.Fatalf("early %v", marks)
	}
	if _, marks := p.Tick(); !reflect.DeepEqual(marks, []string{"a"}) {
		t.Fatalf("%v", marks)
	}
	if _, marks := p.Tick(); !reflect.DeepEqual(marks, []string{"b"}) {
		t.Fatalf("%v", marks)
	}
}

func TestMarkOnAnEmptyQueueIsDueAtTheNextTick(t *testing.T) {
	p := NewPlayer("PCMA")
	p.Mark("now")
	frame, marks := p.Tick()
	if frame != nil || !reflect.DeepEqual(marks, []string{"now"}) {
		t.Fatalf("%v %v", frame, marks)
	}
}

func TestPartialFrameBeforeAMarkIsPaddedWithSilence(t *testing.T) {
	p := NewPlayer("PCMA")
	p.Write(fill(100, 1))
	p.Mark("end")
	frame, marks := p.Tick()
	if !bytes.Equal(frame, append(fill(100, 1), fill(60, 0xD5)...)) || !reflect.DeepEqual(marks, []string{"end"}) {
		t.Fatalf("%v %v", frame, marks)
	}
}

func TestPartialFrameWaitsOneTickForTheRest(t *testing.T) {
	p := NewPlayer("PCMU")
	p.Write(fill(100, 1))
	if frame, _ := p.Tick(); frame != nil {
		t.Fatal("partial frame sent at once")
	}
	p.Write(fill(60, 2))
	if frame, _ := p.Tick(); !bytes.Equal(frame, append(fill(100, 1), fill(60, 2)...)) {
		t.Fatalf("%v", frame)
	}
	p.Write(fill(10, 3))
	p.Tick()
	if frame, _ := p.Tick(); !bytes.Equal(frame, append(fill(10, 3), fill(150, 0xFF)...)) {
		t.Fatalf("a stranded partial frame is not padded: %v", frame)
	}
}

func TestClearDropsAudioAndPendingMarks(t *testing.T) {
	p := NewPlayer("PCMU")
	p.Write(fill(800, 1))
	p.Mark("unheard")
	p.Tick()
	p.Clear()
	if p.Pending() != 0 {
		t.Fatal("audio left")
	}
	p.Write(fill(160, 2))
	p.Mark("heard")
	frame, marks := p.Tick()
	if !bytes.Equal(frame, fill(160, 2)) || !reflect.DeepEqual(marks, []string{"heard"}) {
		t.Fatalf("%v %v", frame, marks)
	}
	for i := 0; i < 10; i++ {
		if _, marks := p.Tick(); len(marks) != 0 {
			t.Fatalf("a cleared mark came back: %v", marks)
		}
	}
}
