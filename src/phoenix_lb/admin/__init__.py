"""The admin listener: metrics, stub_status, health, status page and control API."""
