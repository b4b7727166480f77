package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is what sipd reads from its environment (SIPD_*); see docs/telephony.md.
type Config struct {
	SIPAddr     string        // host:port of the SIP listeners, UDP and TCP
	ControlAddr string        // host:port of the HTTP control API
	APIURL      string        // the platform API base, no trailing slash
	Secret      string        // Bearer secret, both directions; never logged
	PublicHost  string        // written in SDP c= and Contact
	RTPMin      int           // first UDP port for RTP (even)
	RTPMax      int           // last UDP port for RTP
	Realm       string        // digest realm
	APITimeout  time.Duration // longest wait for one platform API request
}

// SIPHost is the address the SIP and RTP sockets bind.
func (c Config) SIPHost() string {
	host, _, _ := net.SplitHostPort(c.SIPAddr)
	return host
}

// SIPPort is the port of the SIP listeners.
func (c Config) SIPPort() int {
	_, port, _ := net.SplitHostPort(c.SIPAddr)
	n, _ := strconv.Atoi(port)
	return n
}

// LoadConfig reads the configuration through getenv (os.Getenv in main, a map in tests).
func LoadConfig(getenv func(string) string) (Config, error) {
	get := func(name, fallback string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return fallback
	}
	c := Config{
		SIPAddr:     get("SIPD_SIP_ADDR", "127.0.0.1:5070"),
		ControlAddr: get("SIPD_CONTROL_ADDR", "127.0.0.1:5071"),
		APIURL:      strings.TrimRight(get("SIPD_API_URL", "http://127.0.0.1:8000"), "/"),
		Secret:      getenv("SIPD_SECRET"),
		PublicHost:  get("SIPD_PUBLIC_HOST", "127.0.0.1"),
		Realm:       get("SIPD_REALM", "voxagent"),
	}
	for name, addr := range map[string]string{"SIPD_SIP_ADDR": c.SIPAddr, "SIPD_CONTROL_ADDR": c.ControlAddr} {
		if err := checkHostPort(addr); err != nil {
			return c, fmt.Errorf("%s=%q: %w", name, addr, err)
		}
	}
	if c.Secret == "" {
		return c, fmt.Errorf("SIPD_SECRET is empty: set the shared secret of the platform API")
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("SIPD_API_URL=%q is not an http(s) URL", c.APIURL)
	}
	var err error
	if c.RTPMin, c.RTPMax, err = ParsePortRange(get("SIPD_RTP_PORTS", "20000-20999")); err != nil {
		return c, fmt.Errorf("SIPD_RTP_PORTS: %w", err)
	}
	seconds, err := strconv.ParseFloat(get("SIPD_API_TIMEOUT", "5"), 64)
	if err != nil || seconds <= 0 {
		return c, fmt.Errorf("SIPD_API_TIMEOUT=%q is not a positive number of seconds", getenv("SIPD_API_TIMEOUT"))
	}
	c.APITimeout = time.Duration(seconds * float64(time.Second))
	return c, nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("no host (use 0.0.0.0 for every interface)")
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// ParsePortRange reads "20000-20999": at least two ports (RTP takes even ports), in 1024..65535.
func ParsePortRange(text string) (int, int, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(text), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not a range like 20000-20999", text)
	}
	a, errA := strconv.Atoi(strings.TrimSpace(lo))
	b, errB := strconv.Atoi(strings.TrimSpace(hi))
	if errA != nil || errB != nil {
		return 0, 0, fmt.Errorf("%q is not a range like 20000-20999", text)
	}
	if a < 1024 || b > 65535 || b <= a {
		return 0, 0, fmt.Errorf("%q: need 1024 <= first < last <= 65535", text)
	}
	if a%2 == 1 {
		a++
	}
	if a > b {
		return 0, 0, fmt.Errorf("%q holds no even port", text)
	}
	return a, b, nil
}
