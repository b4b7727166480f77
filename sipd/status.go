package main

var reasonPhrases = map[int]string{
	400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
	404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
	408: "Request Timeout", 410: "Gone", 480: "Temporarily Unavailable",
	481: "Call/Transaction Does Not Exist", 484: "Address Incomplete", 486: "Busy Here",
	487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
	501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
	600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

// reasonPhrase is the standard phrase of a SIP status (RFC 3261 section 21).
func reasonPhrase(code int) string {
	if p, ok := reasonPhrases[code]; ok {
		return p
	}
	switch {
	case code >= 600:
		return "Global Failure"
	case code >= 500:
		return "Server Error"
	}
	return "Request Failure"
}

// outboundStatus maps the final answer to an INVITE we sent to the platform's call status.
func outboundStatus(code int) string {
	switch code {
	case 486, 600:
		return "busy"
	case 408, 480, 487:
		return "no-answer"
	case 603:
		return "busy"
	}
	return "failed"
}
