package main

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram of durations in 10 µs buckets up to 100 ms (longer ones count in the last bucket,
// their exact maximum is kept): percentiles without keeping samples.
type Histogram struct {
	mu      sync.Mutex
	buckets [10000]uint64
	count   uint64
	sum     time.Duration
	max     time.Duration
}

const bucketWidth = 10 * time.Microsecond

func (h *Histogram) Add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := int(d / bucketWidth)
	if i >= len(h.buckets) {
		i = len(h.buckets) - 1
	}
	h.mu.Lock()
	h.buckets[i]++
	h.count++
	h.sum += d
	if d > h.max {
		h.max = d
	}
	h.mu.Unlock()
}

func (h *Histogram) Reset() {
	h.mu.Lock()
	h.buckets = [len(h.buckets)]uint64{}
	h.count, h.sum, h.max = 0, 0, 0
	h.mu.Unlock()
}

// Summary is what /stats shows: count, p50/p99/max/mean in milliseconds (null when empty).
func (h *Histogram) Summary() map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]any{"count": h.count, "p50_ms": nil, "p99_ms": nil, "max_ms": nil, "mean_ms": nil}
	if h.count == 0 {
		return out
	}
	out["p50_ms"] = h.percentile(50)
	out["p99_ms"] = h.percentile(99)
	out["max_ms"] = ms(h.max)
	out["mean_ms"] = ms(h.sum / time.Duration(h.count))
	return out
}

// percentile: the upper edge of the bucket holding the p-th sample (never above the maximum).
func (h *Histogram) percentile(p float64) float64 {
	rank := uint64(math.Ceil(p / 100 * float64(h.count)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, n := range h.buckets {
		seen += n
		if seen >= rank {
			edge := time.Duration(i+1) * bucketWidth
			if edge > h.max {
				edge = h.max
			}
			return ms(edge)
		}
	}
	return ms(h.max)
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000 }

// stats of this process (one App per process).
var stats Stats

// Stats are sipd's counters and its media hop's latency, for /stats (the benchmark reads them).
type Stats struct {
	// InboundLatency: a caller's RTP packet read from its socket -> its payload written to the
	// bridge's WebSocket (sipd's share of the added latency on the way in).
	InboundLatency Histogram
	Answered       atomic.Uint64 // inbound calls answered
	Refused        atomic.Uint64 // inbound INVITEs refused (the API's refusals, 503s)
	Placed         atomic.Uint64 // outbound calls placed
	RTPIn          atomic.Uint64 // audio packets from callers
	RTPOut         atomic.Uint64 // packets sent to callers (audio and silence)
	Dropped        atomic.Uint64 // caller frames dropped: the bridge was not reading
}

func (s *Stats) Snapshot(active int) map[string]any {
	return map[string]any{
		"active_calls":    active,
		"inbound_latency": s.InboundLatency.Summary(),
		"counters": map[string]uint64{
			"calls_answered": s.Answered.Load(), "calls_refused": s.Refused.Load(),
			"calls_placed": s.Placed.Load(), "rtp_in": s.RTPIn.Load(), "rtp_out": s.RTPOut.Load(),
			"frames_dropped": s.Dropped.Load(),
		},
	}
}

// Reset clears the latency histogram (counters keep counting: diff them).
func (s *Stats) Reset() { s.InboundLatency.Reset() }
