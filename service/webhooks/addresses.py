"""Which addresses a webhook may call: public ones, or those the operator allows.

Checked twice: when a webhook is submitted (a clear 400 for the caller) and again
right before each delivery connects, on the address it will connect to, so a name
that resolved to a public address at submit and to an internal one later (DNS
rebinding) is still refused. A literal address is judged without any lookup.

The request then goes to the checked address itself, with the name kept for the
Host header and TLS (SNI and certificate). httpx-secure was considered: it finds a
name's address by opening TCP probes to it (denied addresses included), takes no
resolver a test could stub, and patches httpx/httpcore internals (pinned below
httpx 0.29); this check is a resolve, a judgement of every answer, and a connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> every address the name resolves to.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# A name that takes longer to resolve is refused (at submit, a 400 in bounded time).
RESOLVE_TIMEOUT_SECONDS = 5.0
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class WebhookRefused(Exception):
    """The webhook URL is not one the service will call; the message says why (no URL in it)."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # A link-local IPv6 answer may carry a scope ("fe80::1%eth0"); the address is what counts.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                              for info in infos))


def parse_allow(text: str) -> tuple[IPNetwork, ...]:
    """IMAGEGEN_WEBHOOK_ALLOW: comma-separated CIDRs (ValueError names a bad one)."""
    networks = []
    for part in text.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"not a CIDR: {part.strip()!r}") from None
    return tuple(networks)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[-4:])
    return None


def is_public(address: IPAddress) -> bool:
    """Globally reachable unicast: not loopback, private, link-local, multicast or reserved."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_public(inner)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_private
        or address.is_loopback or address.is_link_local or address.is_unspecified)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery connects: the checked address, and the name it stands for."""

    url: httpx.URL  # the webhook URL with its host replaced by `address`
    host_header: str
    sni_hostname: str | None  # for HTTPS to a name: the certificate must match the name


class AddressPolicy:
    """Public addresses, plus the operator's allowed networks."""

    def __init__(self, allow: Iterable[IPNetwork] = (),
                 resolver: Resolver = system_resolver) -> None:
        self.allow = tuple(allow)
        self.resolver = resolver

    def permits(self, address: IPAddress) -> bool:
        inner = embedded_ipv4(address)
        candidates = [address] if inner is None else [address, inner]
        if any(a in net for a in candidates for net in self.allow if a.version == net.version):
            return True
        return is_public(address)

    async def resolve(self, url: str) -> Target:
        """The address to connect to for `url`; WebhookRefused when any is not permitted."""
        parsed = parse_webhook_url(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
            literal = True
        except ValueError:
            literal = False
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                    addresses = await self.resolver(host, port)
            except (OSError, TimeoutError):
                raise WebhookRefused("The webhook host does not resolve.") from None
        if not addresses:
            raise WebhookRefused("The webhook host does not resolve.")
        # Every answer must pass: a resolver may hand out any one of them later.
        if not all(self.permits(address) for address in addresses):
            raise WebhookRefused("The webhook host is or resolves to a loopback, private, "
                                 "link-local, multicast or reserved address.")
        return Target(url=parsed.copy_with(host=str(addresses[0])),
                      host_header=parsed.netloc.decode("ascii"),
                      sni_hostname=None if literal or parsed.scheme != "https" else host)


def parse_webhook_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise WebhookRefused("The webhook URL is not a valid URL.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookRefused("The webhook URL must be an absolute http or https URL.")
    return parsed
