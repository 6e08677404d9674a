"""Upstream side: servers and their state, groups, keep-alive pools, the client protocol."""
