"""The address of the client behind a request, for everything that keys on it: the audit trail's "from where"
and the throttling of failed logins (connectors/throttling). One rule for both, so that behind a reverse proxy
listed in TRUSTED_PROXIES the throttle counts the clients, not the proxy (which would let one client lock
everyone out), and the audit trail records them.
"""

import ipaddress

from django.conf import settings


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_address(request) -> str | None:
    """The client's IP address: REMOTE_ADDR, or, when that is a trusted proxy (TRUSTED_PROXIES), the right-most
    address of X-Forwarded-For that is not one of the trusted proxies (the left part can be forged by the client).
    """
    remote = request.META.get("REMOTE_ADDR") or ""
    if remote and _trusted(remote):
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        for address in reversed(forwarded):
            if not _trusted(address):
                remote = address
                break
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None
