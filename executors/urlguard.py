"""The SSRF guard for URLs that an action names (webhooks): a worker must not become a way into the network it
runs in (the cloud metadata service at 169.254.169.254, an admin port on loopback, a database on 10.x).

The check is made where the socket is opened, after DNS resolution, on every address the name resolves to,
and the socket is then opened to one of those checked addresses: a name that resolves to a public address
when checked and to 127.0.0.1 a moment later (DNS rebinding) cannot slip through, since no second lookup is
made (executors._guarded_transport does the connecting). Each redirect hop opens its own connection, so each
is checked the same way. Host header and TLS SNI stay the URL's own name (only the TCP connect is pinned).

An allow-list (OPSQ_WEBHOOK_ALLOW_HOSTS: hostnames and CIDRs) opens what an installation needs: a hostname on
it may resolve to anything; an address inside an allowed CIDR is let through whatever name led to it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from executors.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "OPSQ_WEBHOOK_ALLOW_HOSTS"

# Most specific first: 169.254.169.254 is also "private", but "link-local" says why it matters.
_REASONS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


class DestinationRefused(PermanentError):
    """A URL whose host is, or resolves to, an address the guard refuses: permanent (the same URL is refused
    again), and nothing was sent."""


def _plain(ip: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 reaches 127.0.0.1; judge it as what it reaches.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def refusal(ip: IPAddress) -> str | None:
    """Why `ip` is refused by default ("loopback", "link-local", ...), or None for a public address."""
    ip = _plain(ip)
    for attr, reason in _REASONS:
        if getattr(ip, attr):
            return reason
    # What no flag above names but is still not on the internet (100.64.0.0/10, shared address space).
    return None if ip.is_global else "non-global"


@dataclass(frozen=True)
class AddressGuard:
    """The allow-list and the check. An empty allow-list refuses every non-public address."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: str | None) -> AddressGuard:
        """'127.0.0.1/32, sandbox.internal, ::1' -> the guard. A bare address is its own /32 (/128)."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (allow or "").replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(candidate in net for net in self.networks for candidate in {ip, _plain(ip)}
                   if candidate.version == net.version)

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raises DestinationRefused unless every address is public or allowed (or the host is allowed).
        Every address, not the first: the connect may use any of them."""
        if self.host_allowed(host):
            return
        for ip in addresses:
            reason = refusal(ip)
            if reason is not None and not self.address_allowed(ip):
                shown = host if host == str(ip) else f"{host} ({ip})"
                article = "an" if reason[0] in "aeiou" else "a"
                raise DestinationRefused(
                    f"webhook destination refused: {shown} is {article} {reason} address; "
                    f"{ALLOW_SETTING} (hostnames, CIDRs) lets an installation's own hosts through",
                    platform="webhook")

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses, checked. Raises OSError when the name does not resolve."""
        addresses = addresses_of(host, port)
        self.check(host, addresses)
        return addresses


def addresses_of(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, unchecked, each once, in the resolver's order. Raises OSError when the name does not
    resolve."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


PROXY_SETTING = "OPSQ_WEBHOOK_PROXY"


@dataclass(frozen=True)
class WebhookProxy:
    """OPSQ_WEBHOOK_PROXY: an HTTP proxy every webhook call goes through, as a CONNECT tunnel to the destination's
    checked address (executors._guarded_transport). `authorization`: the Proxy-Authorization value, from the URL's
    user and password."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str | None) -> WebhookProxy | None:
        """'http://[user:password@]host:port' -> the proxy; None when unset. ValueError names what is wrong
        (never the password)."""
        if not url or not url.strip():
            return None
        from urllib.parse import unquote, urlsplit  # noqa: PLC0415 (only with a proxy)

        parts = urlsplit(url.strip())
        if parts.scheme != "http":
            raise ValueError(f"{PROXY_SETTING} must be an http:// URL (the proxy is spoken to in plain HTTP; the "
                             f"webhook's own TLS runs inside the tunnel), not {parts.scheme or 'no scheme'}://")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"{PROXY_SETTING}: the port is not a number") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{PROXY_SETTING} must be http://[user:password@]host:port, nothing more")
        authorization = None
        if parts.username is not None:
            import base64  # noqa: PLC0415

            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(parts.hostname, port, authorization)

    def shown(self) -> str:
        """What may be shown of it: where it is and whether it has credentials, never them."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}, {'password set' if self.authorization else 'no password'}"
