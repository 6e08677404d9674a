"""Listeners, the downstream HTTP/1 protocol and per-request orchestration."""
