"""Phoenix LB: a load balancer and reverse proxy for the Phoenix Orchestrator."""

__version__ = "0.1.0"
