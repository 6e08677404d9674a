"""The control plane (state owner, admin API, reloads) and the worker processes."""
