"""What to answer: a question, the client's network and region health in; records out.

Pure: no sockets, no clock, no wire format (the server turns records into
dnslib RRs), randomness injected.  One :class:`Zone` per config.

Names (all compared case-insensitively; owner names are written lower case)::

    <zone>            A / AAAA   the VIPs of the regions the policy picks
                      SOA, NS    the zone's own records
                      ANY        the SOA only (RFC 8482: a subset is enough)
                      other      NOERROR, no data, SOA in authority (RFC 2308)
    <in-zone nameserver>  A / AAAA  its glue addresses; other types: no data
    other names in the zone  NXDOMAIN, SOA in authority
    outside the zone        REFUSED (we are no resolver)
    class other than IN     REFUSED; AXFR/IXFR: REFUSED (no zone transfers)

Region choice (policies, each one small function over the healthy regions in
rank order: priority, then file order)::

    nearest_healthy  the healthy region whose subnets contain the client, the
                     longest prefix winning; the client is the EDNS Client
                     Subnet if the query has one with a non-zero source prefix,
                     else the resolver's address.  No match: every healthy
                     region of the best priority present (with no priorities
                     set, every healthy region), so the resolver spreads load.
    failover         the first healthy region.
    weighted         one healthy region, at random in proportion to weight.

No region healthy: ``return_all`` answers every region's VIPs (a health
checker that fails everywhere is more likely wrong than every region being
down), ``servfail`` answers SERVFAIL.

The family follows the question: A answers a region's IPv4 VIPs, AAAA its
IPv6 ones.  A picked region without an address of that family gives NOERROR
with no data rather than another region's address, so IPv4 and IPv6 clients of
one network go to the same place.

ECS scope (RFC 7871 7.2.1): the answer echoes the client's source prefix as
the scope when the policy looked at the client (nearest_healthy and an
address answer), and 0 otherwise, which lets resolvers cache it for everyone.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from phoenix_lb.gslb.config import GslbConfig, in_zone

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Query types and classes (RFC 1035 3.2.2-3.2.5, RFC 3596, RFC 1995).
A = 1
NS = 2
SOA = 6
AAAA = 28
IXFR = 251
AXFR = 252
ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# Response codes (RFC 1035 4.1.1).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5

RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    16: "BADVERS",
}

# SOA timers only matter to secondaries, which this server has none of
# (RIPE-203's recommendations); the minimum is the negative-caching TTL.
SOA_REFRESH = 3600
SOA_RETRY = 600
SOA_EXPIRE = 1209600

Policy = Literal["nearest_healthy", "failover", "weighted"]


@dataclass(frozen=True, slots=True)
class Soa:
    """SOA rdata."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; ``data`` is an address, a target name or a :class:`Soa`."""

    name: str
    rtype: int
    ttl: int
    data: str | Soa


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one question, before wire encoding."""

    rcode: int
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    #: regions whose VIPs are in the answer (metrics)
    regions: tuple[str, ...] = ()
    #: ECS scope prefix length to echo (RFC 7871); 0 = valid for every client
    scope: int = 0


@dataclass(frozen=True, slots=True)
class Region:
    """A region as the policies see it."""

    name: str
    v4: tuple[str, ...]
    v6: tuple[str, ...]
    subnets: tuple[IPNetwork, ...]
    weight: int
    #: (0, priority) when a priority is set, (1, 0) otherwise; ties keep file order
    tier: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Client:
    """Where the query comes from: the resolver's address and the ECS network, if any."""

    address: IPAddress | None = None
    subnet: IPNetwork | None = None

    @property
    def network(self) -> IPNetwork | None:
        """The network used to pick a region: ECS when given (non-zero), else the resolver."""
        if self.subnet is not None and self.subnet.prefixlen > 0:
            return self.subnet
        if self.address is not None:
            return ipaddress.ip_network(self.address)
        return None


# -- policies: (healthy regions in rank order, client, rng) -> picked, tailored
#
# ``healthy`` is never empty.  ``tailored`` says the pick depended on the
# client's address (for the ECS scope).


PolicyFn = Callable[[Sequence[Region], Client, random.Random], tuple[tuple[Region, ...], bool]]


def nearest_healthy(
    healthy: Sequence[Region], client: Client, rng: random.Random
) -> tuple[tuple[Region, ...], bool]:
    """The healthy region nearest the client; no match: the best tier of healthy regions."""
    network = client.network
    if network is not None:
        best: Region | None = None
        best_len = -1
        for region in healthy:
            for subnet in region.subnets:
                if (
                    subnet.version == network.version
                    and subnet.prefixlen > best_len
                    and network.subnet_of(subnet)  # type: ignore[arg-type]
                ):
                    best, best_len = region, subnet.prefixlen
        if best is not None:
            return (best,), True
    top = healthy[0].tier
    # Another client could have matched a region: the fallback is tailored too,
    # unless no healthy region has subnets at all.
    tailored = network is not None and any(region.subnets for region in healthy)
    return tuple(region for region in healthy if region.tier == top), tailored


def failover(
    healthy: Sequence[Region], client: Client, rng: random.Random
) -> tuple[tuple[Region, ...], bool]:
    """The first healthy region in rank order."""
    return (healthy[0],), False


def weighted(
    healthy: Sequence[Region], client: Client, rng: random.Random
) -> tuple[tuple[Region, ...], bool]:
    """One healthy region, chosen with probability weight / total weight."""
    point = rng.random() * sum(region.weight for region in healthy)
    for region in healthy:
        point -= region.weight
        if point < 0:
            return (region,), False
    return (healthy[-1],), False  # float rounding at the very end


POLICIES: dict[str, PolicyFn] = {
    "nearest_healthy": nearest_healthy,
    "failover": failover,
    "weighted": weighted,
}


class Zone:
    """The zone's data and policy, compiled from a :class:`GslbConfig`."""

    __slots__ = (
        "_choose",
        "_nodata",
        "_ns_records",
        "_nxdomain",
        "_records",
        "_soa_record",
        "all_down",
        "glue",
        "name",
        "nameservers",
        "policy",
        "regions",
        "ttl",
    )

    def __init__(
        self,
        name: str,
        regions: Sequence[Region],
        *,
        ttl: int,
        policy: Policy,
        all_down: Literal["return_all", "servfail"],
        nameservers: dict[str, tuple[str, ...]],
        serial: int,
    ) -> None:
        if not regions:
            raise ValueError("a zone needs at least one region")
        self.name = name
        # Rank order: priority (unset last), then file order (sorted is stable).
        self.regions: tuple[Region, ...] = tuple(sorted(regions, key=lambda r: r.tier))
        self.ttl = ttl
        self.policy = policy
        self._choose = POLICIES[policy]
        self.all_down = all_down
        self.nameservers = nameservers or {f"ns1.{name}": ()}
        #: glue: addresses of nameservers inside the zone, by name
        self.glue = {host: addrs for host, addrs in self.nameservers.items() if addrs}
        soa = Soa(
            mname=next(iter(self.nameservers)),
            rname=f"hostmaster.{name}",
            serial=serial & 0xFFFFFFFF,
            refresh=SOA_REFRESH,
            retry=SOA_RETRY,
            expire=SOA_EXPIRE,
            minimum=ttl,
        )
        self._soa_record = Record(name, SOA, ttl, soa)
        self._ns_records = tuple(Record(name, NS, ttl, host) for host in self.nameservers)
        self._nodata = Answer(NOERROR, authority=(self._soa_record,))
        # The address records of each region, built once: (region name, A/AAAA) -> records.
        self._records: dict[tuple[str, int], tuple[Record, ...]] = {}
        for region in self.regions:
            self._records[region.name, A] = tuple(Record(name, A, ttl, a) for a in region.v4)
            self._records[region.name, AAAA] = tuple(Record(name, AAAA, ttl, a) for a in region.v6)
        self._nxdomain = Answer(NXDOMAIN, authority=(self._soa_record,))

    @classmethod
    def from_config(cls, config: GslbConfig, *, serial: int) -> Zone:
        """Compile the config; ``serial`` is the SOA serial (e.g. the start time)."""
        regions = []
        for name, region in config.regions.items():
            addresses = [ipaddress.ip_address(vip) for vip in region.vips]
            regions.append(
                Region(
                    name=name,
                    v4=tuple(str(a) for a in addresses if a.version == 4),
                    v6=tuple(a.compressed for a in addresses if a.version == 6),
                    subnets=tuple(ipaddress.ip_network(s) for s in region.subnets),
                    weight=region.weight,
                    tier=(0, region.priority) if region.priority is not None else (1, 0),
                )
            )
        return cls(
            config.zone,
            regions,
            ttl=config.ttl_seconds,
            policy=config.policy,
            all_down=config.all_down,
            nameservers={host: tuple(addrs) for host, addrs in config.nameservers.items()},
            serial=serial,
        )

    @property
    def soa(self) -> Record:
        return self._soa_record

    def answer(
        self,
        qname: str,
        qtype: int,
        qclass: int,
        client: Client,
        healthy: Collection[str],
        rng: random.Random,
    ) -> Answer:
        """The answer to one question.

        ``qname`` is in text form, any case, with or without the final dot;
        ``healthy`` holds the names of the regions currently up.
        """
        name = _ascii_lower(qname)
        if name.endswith("."):
            name = name[:-1]
        # Only IN is served; QCLASS ANY (*) too is refused rather than
        # answered authoritatively for a class we do not hold all of.
        if qclass != CLASS_IN or not in_zone(name, self.name):
            return Answer(REFUSED)
        if qtype in (AXFR, IXFR):
            return Answer(REFUSED)
        if name == self.name:
            return self._apex(qtype, client, healthy, rng)
        glue = self.glue.get(name)
        if glue is not None:
            return self._glue(name, qtype, glue)
        if name in self.nameservers or self._is_ancestor_of_nameserver(name):
            return self._nodata  # exists (empty non-terminal or glue-less name): no data
        return self._nxdomain

    def _apex(
        self, qtype: int, client: Client, healthy: Collection[str], rng: random.Random
    ) -> Answer:
        if qtype in (A, AAAA):
            return self._addresses(qtype, client, healthy, rng)
        if qtype in (SOA, ANY):
            return Answer(NOERROR, answer=(self._soa_record,))
        if qtype == NS:
            additional = tuple(
                Record(host, A if ":" not in addr else AAAA, self.ttl, addr)
                for host, addrs in self.glue.items()
                for addr in addrs
            )
            return Answer(NOERROR, answer=self._ns_records, additional=additional)
        return self._nodata

    def _addresses(
        self, qtype: int, client: Client, healthy: Collection[str], rng: random.Random
    ) -> Answer:
        up = [region for region in self.regions if region.name in healthy]
        tailored = False
        picked: tuple[Region, ...]
        if up:
            picked, tailored = self._choose(up, client, rng)
        elif self.all_down == "servfail":
            return Answer(SERVFAIL)
        else:
            picked = self.regions
        records: list[Record] = []
        names: list[str] = []
        for region in picked:
            own = self._records[region.name, qtype]
            if own:
                names.append(region.name)
                records.extend(own)
        scope = 0
        if tailored and client.subnet is not None and client.subnet.prefixlen > 0:
            scope = client.subnet.prefixlen
        if not records:
            return Answer(NOERROR, authority=(self._soa_record,), scope=scope)
        return Answer(NOERROR, answer=tuple(records), regions=tuple(names), scope=scope)

    def _glue(self, name: str, qtype: int, addresses: tuple[str, ...]) -> Answer:
        want = 4 if qtype == A else 6 if qtype == AAAA else 0
        records = tuple(
            Record(name, qtype, self.ttl, addr)
            for addr in addresses
            if ipaddress.ip_address(addr).version == want
        )
        if records:
            return Answer(NOERROR, answer=records)
        return self._nodata

    def _is_ancestor_of_nameserver(self, name: str) -> bool:
        suffix = "." + name
        return any(host.endswith(suffix) for host in self.nameservers)


_ASCII_UPPER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(name: str) -> str:
    """DNS case folding: ASCII letters only (RFC 4343); str.lower() folds far more."""
    return name.translate(_ASCII_UPPER)
