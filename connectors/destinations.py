"""Which addresses a request to a URL typed by a user may reach, beyond allowedHosts.

Alert webhooks (usage/governance/webhooks.py) go only to public addresses: not loopback, unspecified, link-local
(where cloud metadata services answer), private, shared, multicast or reserved ones, nor an IPv6 address that
carries such an IPv4 address. The one way past this rule is the administrator's: ``allowedHosts`` in ACTIONS_CONFIG
naming the host or the address itself (``"*"`` does not count). A name is judged by every address it resolves to,
so that a name pointing at 127.0.0.1 is refused like 127.0.0.1 itself.

Connectors keep Kibana's rule, allowedHosts alone: a connector to a model served on this machine
(``http://localhost:11434``) is an ordinary setup there.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from connectors.actions_config import ActionsConfig, default_port
from connectors.validation import host_not_allowed_error, url_error

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnresolvedHost(Exception):
    pass


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to here, in the order a client would try them (an IP literal, in any of the
    spellings the resolver takes such as ``127.1`` or ``2130706433``, gives itself)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnresolvedHost(f"{host} could not be resolved: {exc}") from None
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvedHost(f"{host} resolved to no address")
    return addresses


def _carried(address: Address) -> list[Address]:
    """Any IPv4 address this address carries (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64), which a dual-stack
    host or a translator would reach instead, then the address itself."""
    found: list[Address] = []
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address.teredo:
            found.extend(address.teredo)
        if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [*found, address]


def forbidden_kind(address: Address) -> str | None:
    """What kind of non-public address this is ("a loopback address"...), or None for a public one."""
    for candidate in _carried(address):
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_unspecified:
            return "the unspecified address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_private or getattr(candidate, "is_site_local", False):
            return "a private or reserved address"
        if candidate.is_reserved or not candidate.is_global:
            return "a non-public address"
    return None


def refusal(config: ActionsConfig, host: str, addresses: list[Address]) -> str | None:
    """Why a request to ``host``, resolved to ``addresses``, may not go out; None when it may.

    Only the kind of address is named, never the address a name resolved to: the message must not turn the form
    into a way of reading the internal DNS.
    """
    if config.lists_host(host):
        return None
    for address in addresses:
        kind = forbidden_kind(address)
        if kind is None or config.lists_host(str(address)):
            continue
        literal = _is_literal(host)
        where = f'The address "{host}" is {kind}' if literal else f'The host "{host}" resolves to {kind}'
        return (f"{where}. Only public addresses can be reached, unless the allowedHosts networking setting "
                "(ACTIONS_CONFIG) lists this host or address.")
    return None


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def url_destination_error(url: str, credentials_hint: str) -> str | None:
    """Why ``url`` may not be saved as a destination (it is checked again each time it is used), or None. A name
    that does not resolve now is accepted: it may exist by the time it is used, and it is checked then."""
    error = url_error(url, credentials_hint) or host_not_allowed_error(url)
    if error:
        return error
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        addresses = resolve(host, parts.port or default_port(parts.scheme))
    except UnresolvedHost:
        return None
    return refusal(settings.ACTIONS_CONFIG, host, addresses)
