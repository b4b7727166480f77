"""Outbound webhook delivery: Standard Webhooks signing, SSRF guard and the sending client."""
