"""Who a client is, and how much it may do in an hour: the arena's rate limits.

A client is its network (an IPv4 address, an IPv6 /64), never Gradio's session id, which the client
chooses. The limits are enforced on the server; a refusal is a `RuleViolation` like any other.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from dataclasses import dataclass

from arena.battle import RuleViolation
from arena.wording import counted


def client_network(host: str | None) -> str:
    """Who a connection counts as, for limits and for owning battles.

    An IPv4 address written as IPv6 (`::ffff:203.0.113.7`) is that IPv4 address,
    and an IPv6 address stands for its /64: one subscriber gets a whole /64,
    so counting single addresses would give one person countless limits.
    A connection with no address (a test client) is "unknown".
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test client, "unknown"): taken as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# An IPv6 subscriber often holds a /56 (256 /64s) or a /48 (65,536): limits that would let one /64 do
# little must also hold for those, at these multiples of the /64's allowance.
WIDER_IPV6_NETWORKS = ((56, 4), (48, 16))


def wider_networks(network: str) -> list[tuple[str, int]]:
    """(network, multiple of the /64's allowance) for the /56 and /48 around an IPv6 /64; none for IPv4."""
    try:
        inside = ipaddress.ip_network(network)
    except ValueError:
        return []
    if inside.version != 6:
        return []
    return [(str(inside.supernet(new_prefix=prefix)), multiple) for prefix, multiple in WIDER_IPV6_NETWORKS]


def allowance_levels(network: str, allowed: int) -> list[tuple[str, int]]:
    """(network, what it may use): the client's own network, then the wider IPv6 networks around it."""
    return [(network, allowed), *((wider, allowed * multiple) for wider, multiple in wider_networks(network))]


class RateLimited(RuleViolation):
    """Over an hourly limit: `network` is the wider one that is full (None: the client's own), at `allowed`."""

    def __init__(self, message: str, *, network: str | None, allowed: int):
        super().__init__(message)
        self.network, self.allowed = network, allowed

    @staticmethod
    def whose(network: str | None, *, sentence_start: bool = False) -> str:
        """Whose limit is full, for the refusal: the client's own network, or a wider one it belongs to."""
        words = f"the network your address belongs to ({network})" if network else "your network address"
        return words[0].upper() + words[1:] if sentence_start else words


@dataclass(frozen=True)
class Charge:
    """One count made by `RateLimiter.check_and_count`: where it was made, and which entry it is."""

    levels: tuple[str, ...]
    entry: tuple[float, int, int]  # (when, how much, serial): the serial tells equal counts apart


class RateLimiter:
    """Sliding one-hour window of what a client network used (battles, regenerations, sessions, tokens).

    An IPv6 /64 also counts against the /56 and /48 around it, which allow a multiple of its share
    (`WIDER_IPV6_NETWORKS`): one subscriber holding 256 /64s must not get 256 allowances. `unit` and
    `what_counts` word the refusal ("battle", "regenerations included").
    """

    WINDOW_S = 3600.0

    def __init__(self, per_hour: int, clock=time.monotonic, *, unit: str = "battle",
                 what_counts: str = "regenerations included"):
        self.per_hour = per_hour
        self.clock = clock
        self.unit, self.what_counts = unit, what_counts
        self.starts: dict[str, deque[tuple[float, int, int]]] = {}  # (when, how much, serial) per network
        self.lock = threading.Lock()
        self._next_sweep = clock() + self.WINDOW_S
        self._serial = 0

    def check_and_count(self, key: str, amount: int = 1) -> Charge:
        with self.lock:
            now = self.clock()
            if now >= self._next_sweep:  # once a window: forget addresses not seen in it (each costs memory)
                self.starts = {k: v for k, v in self.starts.items() if v and v[-1][0] > now - self.WINDOW_S}
                self._next_sweep = now + self.WINDOW_S
            levels = allowance_levels(key, self.per_hour)
            for level, allowed in levels:
                self._check(level, allowed, amount, now, shared=level != key)
            self._serial += 1
            charge = Charge(tuple(level for level, _ in levels), (now, amount, self._serial))
            for level in charge.levels:
                self.starts[level].append(charge.entry)
            return charge

    def refund(self, charge: Charge) -> None:
        """Take back one count, the request it was for being refused after all: that count only, at every
        level, for on a shared /56 or /48 the newest count may be a neighbour's."""
        with self.lock:
            for level in charge.levels:
                entries = self.starts.get(level)
                if entries and charge.entry in entries:
                    entries.remove(charge.entry)

    def _check(self, key: str, allowed: int, amount: int, now: float, shared: bool) -> None:
        starts = self.starts.setdefault(key, deque())
        while starts and starts[0][0] <= now - self.WINDOW_S:
            starts.popleft()
        used = sum(spent for _, spent, _ in starts)
        if used and used + amount > allowed:  # alone, one request may use a whole hour's allowance
            wait_min = max(1, int((starts[0][0] + self.WINDOW_S - now) / 60) + 1)
            network = key if shared else None
            raise RateLimited(
                f"{RateLimited.whose(network, sentence_start=True)} reached the limit here: {counted(allowed, self.unit)} an hour, "
                f"{self.what_counts}. Please come back in about {counted(wait_min, 'minute')}.",
                network=network, allowed=allowed,
            )
