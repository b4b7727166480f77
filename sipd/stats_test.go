package main

import (
	"testing"
	"time"
)

func TestHistogramPercentilesAndReset(t *testing.T) {
	var h Histogram
	if got := h.Summary(); got["count"] != uint64(0) || got["p99_ms"] != nil {
		t.Fatalf("empty histogram: %v", got)
	}
	for i := 1; i <= 100; i++ {
		h.Add(time.Duration(i) * 100 * time.Microsecond) // 0.1 ms .. 10 ms
	}
	h.Add(250 * time.Millisecond) // beyond the last bucket: counted, its maximum kept
	s := h.Summary()
	if s["count"] != uint64(101) {
		t.Fatalf("count %v", s["count"])
	}
	if p50 := s["p50_ms"].(float64); p50 < 5.0 || p50 > 5.11 {
		t.Fatalf("p50 %v, want ~5.1 ms", p50)
	}
	if p99 := s["p99_ms"].(float64); p99 < 9.9 || p99 > 10.01 {
		t.Fatalf("p99 %v, want ~10 ms", p99)
	}
	if max := s["max_ms"].(float64); max != 250 {
		t.Fatalf("max %v, want 250 ms", max)
	}
	h.Reset()
	if h.Summary()["count"] != uint64(0) {
		t.Fatal("reset keeps samples")
	}
}
