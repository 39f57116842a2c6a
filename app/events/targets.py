"""Where an endpoint may point: checked when it is saved and again at each send.

In production a URL must be ``https`` (plain ``http`` only to a loopback address that
``EVENTS_ALLOW_LOOPBACK`` allows: nothing leaves the host). Its host must resolve only to public
addresses: never loopback (unless ``EVENTS_ALLOW_LOOPBACK``), private, link-local, unique-local,
multicast, reserved, unspecified, or a cloud metadata address. A send connects to the address
that was checked (the request names the IP; ``Host`` and TLS SNI name the host), so a DNS answer
that changes between the check and the connection (rebinding) is never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
RESOLVE_SECONDS = 5.0


class TargetRefused(ValueError):
    """The URL may not be used; the message says why (it never holds a secret)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: what to request (the address) and what to name (host, SNI)."""

    url: str  # the URL with the checked IP in place of the host
    host: str  # the Host header
    sni: str | None  # the TLS server name (https only)


def check_url(url: str, settings: Settings) -> tuple[str, str, int]:
    """The scheme, host and port of a URL that may be saved (``TargetRefused`` otherwise)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise TargetRefused("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetRefused("must not carry credentials")
    if parts.fragment:
        raise TargetRefused("must not have a fragment")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("has an invalid port") from None
    return scheme, parts.hostname.lower(), port


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refused_address(address: IPAddress, settings: Settings) -> str | None:
    """Why an address may not be a destination; None when it may."""
    address = _unmapped(address)
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if settings.events_allow_loopback else "a loopback address"
    for name, flag in (
        ("an unspecified address", address.is_unspecified),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a reserved address", address.is_reserved),
        ("a private address", address.is_private),
        ("a non-global address", not address.is_global),
    ):
        if flag:
            return name
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (an IP literal: itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_SECONDS
        )
    except (OSError, TimeoutError):
        raise TargetRefused(f"the host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TargetRefused(f"the host {host!r} does not resolve")
    return addresses


async def target(url: str, settings: Settings) -> Target:
    """The URL checked now (``TargetRefused`` otherwise): every address of its host allowed."""
    scheme, host, port = check_url(url, settings)
    addresses = await resolve(host, port)
    for address in addresses:
        why = refused_address(address, settings)
        if why is not None:
            raise TargetRefused(f"the host {host!r} resolves to {why}")
    local = all(_unmapped(a).is_loopback for a in addresses)
    if settings.environment == "production" and scheme != "https" and not local:
        raise TargetRefused("must be an https:// URL")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    parts = urlsplit(url)
    default_port = 443 if scheme == "https" else 80
    netloc = literal if port == default_port else f"{literal}:{port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(url=pinned, host=host_header, sni=host if scheme == "https" else None)
