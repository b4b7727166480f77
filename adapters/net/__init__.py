"""Outbound network safety shared by webhooks and agent tools."""
