"""High availability: a pair of Phoenix LB nodes sharing virtual IPs through keepalived.

Phoenix LB does not speak VRRP itself: keepalived is the engine operators
trust.  This package turns the ``ha:`` section of the config into a complete
keepalived.conf (:mod:`~phoenix_lb.ha.keepalived`, pure), reads the VRRP secret
from where the operator keeps it (:mod:`~phoenix_lb.ha.secret`), provides what
keepalived runs (:mod:`~phoenix_lb.ha.hooks`, standard library only), and
tells which node holds the virtual IPs (:mod:`~phoenix_lb.ha.status`).

The division of labour:

* keepalived elects the master, moves the virtual IPs and sends gratuitous
  ARP / unsolicited NA so that clients and switches follow;
* its ``vrrp_script`` runs the health check (``hooks.py check``, also
  ``phoenix-lb ha check``) against this node's admin ``/health``, which
  answers 200 only while the balancer serves and every upstream has a server
  up; ``fall`` failures in a row put the instance in FAULT, which releases
  the virtual IPs to the peer;
* the notify hook (``hooks.py notify``, optional) records each VRRP state
  change in ``ha.state_file`` for ``phoenix-lb ha status``.

docs/ha.md is the operator's guide.
"""

from __future__ import annotations

__all__ = ["INSTANCE_PREFIX", "SCRIPT_NAME", "instance_name"]

# Names used in the rendered keepalived.conf (and in keepalived's log lines).
INSTANCE_PREFIX = "phoenix_lb_"
SCRIPT_NAME = "chk_phoenix"


def instance_name(virtual_router_id: int) -> str:
    """The vrrp_instance name for a router id: ``phoenix_lb_51``."""
    return f"{INSTANCE_PREFIX}{virtual_router_id}"
