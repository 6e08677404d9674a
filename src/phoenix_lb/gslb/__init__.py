"""Global server load balancing: an authoritative DNS server for the service zone.

It answers the service name with the VIPs of healthy regions, preferring the
client's region (by EDNS Client Subnet, else by the resolver's address).

* :mod:`.config`  -- the ``gslb:`` section (pydantic) and its YAML loader
* :mod:`.answer`  -- pure: question + client + region health -> records, rcode
* :mod:`.health`  -- HTTP prober of each region's ``/health``, feeding RiseFall
* :mod:`.server`  -- UDP and TCP listeners (dnslib wire format), the service
* :mod:`.metrics` -- counters, Prometheus text and ``/health`` on the admin port

``phoenix-lb gslb -c FILE`` (:mod:`phoenix_lb.commands.gslb`) runs it;
``docs/gslb.md`` explains the behaviour and its bounds.
"""
