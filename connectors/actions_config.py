"""The networking settings and preconfigured connectors of the ``ACTIONS_CONFIG`` YAML file.

The keys are Kibana's ``xpack.actions.*`` keys, so a kibana.yml section can be copied in as it is: the file may
hold them at the top level, nested under ``xpack: {actions: ...}``, or as dotted keys
(``xpack.actions.allowedHosts: [...]``, ``ssl.verificationMode: none``). This module has no Django imports so
that settings.py can use it; a malformed file raises ``ActionsConfigError`` naming the key.

A whole kibana.yml works too: keys outside ``xpack.actions`` (``server.*``, ``elasticsearch.*``, ``xpack.security.*``
...) are ignored and listed, by name only, in ``ActionsConfig.ignored_keys``, which the connectors app logs once at
INFO when it starts (their values may be secrets, so they are never read or logged).
"""

from __future__ import annotations

import ipaddress
import re
import ssl as stdlib_ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

VERIFICATION_MODES = ("full", "certificate", "none")
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_RESPONSE_TIMEOUT_SECONDS = 60.0


class ActionsConfigError(ValueError):
    pass


@dataclass(frozen=True)
class TLSSettings:
    """TLS towards one target. Certificate authorities, when given, replace the default trust store (as Node's ``ca``
    option does in Kibana, docs/KIBANA.md 6.1); a client certificate and key (PEM) make it mutual TLS."""

    verification_mode: str = "full"
    certificate_authorities_files: tuple[str, ...] = ()
    certificate_authorities_data: str = ""
    client_certificate: str = field(default="", repr=False)
    client_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class CustomHostSetting:
    scheme: str
    host: str
    port: int
    ssl: TLSSettings


def action_type_disabled_message(type_id: str) -> str:
    """Kibana's ``ActionTypeDisabledError`` text (docs/KIBANA.md 3)."""
    return f'action type "{type_id}" is not enabled in the Kibana config xpack.actions.enabledActionTypes'


# Top-level sections of a kibana.yml (Kibana's settings reference) that mark a file as one even without xpack.*.
KIBANA_SECTIONS = frozenset({
    "server", "elasticsearch", "logging", "path", "pid", "i18n", "telemetry", "monitoring", "csp", "savedObjects",
    "migrations", "uiSettings", "status", "ops", "map", "newsfeed", "home", "console", "data", "security",
    "unifiedSearch", "execution_context", "node", "coreApp", "interactiveSetup", "vis_type_vega", "tileMap",
    "regionmap", "timeline", "discover", "dashboard", "searchprofiler", "stack_connectors",
})

PROXY_HOSTS_WARNING = (
    "The configurations xpack.actions.proxyBypassHosts and xpack.actions.proxyOnlyHosts can not be used at the same "
    "time. The configuration xpack.actions.proxyOnlyHosts will be ignored."
)


@dataclass(frozen=True)
class ActionsConfig:
    allowed_hosts: tuple[str, ...] = ("*",)
    enabled_action_types: tuple[str, ...] = ("*",)
    proxy_url: str = ""
    proxy_headers: tuple[tuple[str, str], ...] = ()
    proxy_bypass_hosts: frozenset[str] = frozenset()
    proxy_only_hosts: frozenset[str] = frozenset()
    ssl: TLSSettings = TLSSettings()
    proxy_verification_mode: str = "full"
    custom_host_settings: tuple[CustomHostSetting, ...] = ()
    max_response_content_length: int = DEFAULT_MAX_RESPONSE_BYTES
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT_SECONDS
    preconfigured: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    # kibana.yml keys outside xpack.actions, by name, and Kibana's start-up warnings: logged once by the app.
    ignored_keys: tuple[str, ...] = field(default=(), compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def is_action_type_enabled(self, type_id: str) -> bool:
        return "*" in self.enabled_action_types or type_id in self.enabled_action_types

    def is_host_allowed(self, hostname: str) -> bool:
        return "*" in self.allowed_hosts or (hostname or "").lower() in self.allowed_hosts

    def lists_host(self, host: str) -> bool:
        """Whether allowedHosts names this hostname or IP address itself, not through ``"*"``: the explicit consent
        that lets an alert webhook reach a loopback or private address (connectors/destinations.py)."""
        host = (host or "").lower()
        if host in self.allowed_hosts:
            return True
        if not _is_ip_address(host):
            return False
        address = ipaddress.ip_address(host)
        return any(_is_ip_address(entry) and ipaddress.ip_address(entry) == address for entry in self.allowed_hosts)

    def custom_host_setting_for(self, scheme: str, host: str, port: int | None) -> CustomHostSetting | None:
        port = port or default_port(scheme)
        for setting in self.custom_host_settings:
            if (setting.scheme, setting.host, setting.port) == (scheme, host.lower(), port):
                return setting
        return None

    def uses_proxy_for(self, hostname: str) -> bool:
        if not self.proxy_url:
            return False
        hostname = (hostname or "").lower()
        if self.proxy_bypass_hosts:
            return hostname not in self.proxy_bypass_hosts
        if self.proxy_only_hosts:
            return hostname in self.proxy_only_hosts
        return True


def default_port(scheme: str) -> int:
    # Kibana's getActualPort (lib/custom_host_settings.ts): smtp's default is 25.
    return {"https": 443, "smtp": 25}.get(scheme, 80)


def load_actions_config(path: str | Path | None) -> ActionsConfig:
    """Read and validate the YAML file at ``path``; no path means Kibana's defaults."""
    if not path:
        return ActionsConfig()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionsConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ActionsConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_actions_config(raw if raw is not None else {})


def parse_actions_config(raw: Any) -> ActionsConfig:
    if not isinstance(raw, dict):
        raise ActionsConfigError("the file must hold a mapping of settings")
    tree = _expand_dotted_keys(raw)
    ignored: list[str] = []
    kibana_yml = "xpack" in tree
    if kibana_yml:
        xpack = _mapping(tree.pop("xpack"), "xpack")
        ignored += [f"xpack.{name}" for name in sorted(set(xpack) - {"actions"})]
        nested = _mapping(xpack.get("actions") or {}, "xpack.actions")
        both = sorted(set(tree) & set(nested))
        if both:
            raise ActionsConfigError(f"{both[0]} is set both at the top level and under xpack.actions")
        tree = {**tree, **nested}
    known = {
        "allowedHosts", "proxyUrl", "proxyHeaders", "proxyBypassHosts", "proxyOnlyHosts", "ssl",
        "customHostSettings", "maxResponseContentLength", "responseTimeout", "preconfigured",
        "rejectUnauthorized", "proxyRejectUnauthorizedCertificates",
        # Kibana keys that exist but mean nothing here are accepted so a kibana.yml section loads as is.
        "enabled", "enabledActionTypes", "preconfiguredAlertHistoryEsIndex", "microsoftGraphApiUrl",
        "microsoftGraphApiScope", "microsoftExchangeUrl", "email", "webhook", "enableFooterInEmail", "run",
        "queued", "usage", "maxAttempts",
    }
    unknown = sorted(set(tree) - known)
    # A kibana.yml (it has xpack.*, or Kibana's own top-level sections) keeps its other settings; the short form of
    # this app's own file (actions keys at the top level) still refuses a misspelt key.
    if unknown and (kibana_yml or set(unknown) <= KIBANA_SECTIONS):
        ignored += unknown
        tree = {key: value for key, value in tree.items() if key in known}
    elif unknown:
        raise ActionsConfigError(f"unknown setting(s): {', '.join(unknown)}")

    warnings: list[str] = []
    bypass = _host_set(tree.get("proxyBypassHosts"), "proxyBypassHosts")
    only = _host_set(tree.get("proxyOnlyHosts"), "proxyOnlyHosts")
    if bypass and only:
        # As Kibana's getValidatedConfig: a warning, and proxyBypassHosts wins (docs/KIBANA.md 6).
        warnings.append(PROXY_HOSTS_WARNING)
        only = frozenset()
    proxy_url = str(tree.get("proxyUrl") or "")
    if proxy_url and not _is_http_url(proxy_url):
        # Kibana's getValidatedConfig only warns, and its agents then ignore the proxy (get_custom_agents.ts).
        warnings.append(f"The configuration xpack.actions.proxyUrl: {_redacted(proxy_url)} is invalid.")
        proxy_url = ""
    ssl = _mapping(tree.get("ssl") or {}, "ssl")
    for key in ssl:
        if key not in ("verificationMode", "proxyVerificationMode"):
            raise ActionsConfigError(f"unknown setting: ssl.{key}")
    # Kibana 7's booleans, replaced by the ssl.* modes in Kibana 8; honoured when the mode itself is not set.
    verification_default = "none" if _flag(tree, "rejectUnauthorized") is False else "full"
    proxy_verification_default = "none" if _flag(tree, "proxyRejectUnauthorizedCertificates") is False else "full"
    verification_mode = _mode(ssl.get("verificationMode", verification_default), "ssl.verificationMode")
    custom_hosts = _custom_host_settings(tree.get("customHostSettings") or [], warnings)
    return ActionsConfig(
        allowed_hosts=_allowed_hosts(tree.get("allowedHosts", ["*"])),
        enabled_action_types=_action_types(tree.get("enabledActionTypes", ["*"])),
        proxy_url=proxy_url,
        proxy_headers=tuple(_header_map(tree.get("proxyHeaders") or {}, "proxyHeaders").items()),
        proxy_bypass_hosts=bypass,
        proxy_only_hosts=only,
        ssl=TLSSettings(verification_mode=verification_mode),
        proxy_verification_mode=_mode(
            ssl.get("proxyVerificationMode", proxy_verification_default), "ssl.proxyVerificationMode"
        ),
        custom_host_settings=custom_hosts,
        max_response_content_length=parse_byte_size(
            tree.get("maxResponseContentLength", DEFAULT_MAX_RESPONSE_BYTES), "maxResponseContentLength"
        ),
        response_timeout=parse_duration_seconds(tree.get("responseTimeout", "60s"), "responseTimeout"),
        preconfigured=_preconfigured(tree.get("preconfigured") or {}),
        ignored_keys=tuple(ignored),
        warnings=tuple(warnings),
    )


def _action_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ActionsConfigError("enabledActionTypes must be a list of connector type ids such as .gen-ai or *")
    return tuple(value)


def parse_byte_size(value: Any, name: str) -> int:
    """Kibana's ByteSizeValue: a number of bytes, or ``"1mb"``, ``"512kb"``, ``"2gb"``, ``"100b"``."""
    if isinstance(value, bool):
        raise ActionsConfigError(f"{name} must be a size such as 1mb")
    if isinstance(value, int) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)?\s*", str(value).lower())
    if not match or int(match.group(1)) <= 0:
        raise ActionsConfigError(f"{name} must be a size such as 1mb, got {value!r}")
    units = {None: 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
    return int(match.group(1)) * units[match.group(2)]


def parse_duration_seconds(value: Any, name: str) -> float:
    """Kibana's duration: milliseconds as a number, or ``"500ms"``, ``"60s"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ActionsConfigError(f"{name} must be a duration such as 60s")
    if isinstance(value, (int, float)) and value > 0:
        return value / 1000
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(value).lower())
    if not match or float(match.group(1)) <= 0:
        raise ActionsConfigError(f"{name} must be a duration such as 60s, got {value!r}")
    units = {None: 0.001, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(match.group(1)) * units[match.group(2)]


# Maps whose keys are names chosen by the user (connector ids, header names), which may hold dots themselves.
_FREE_FORM_MAPS = ("preconfigured", "proxyHeaders")


def _expand_dotted_keys(tree: dict, prefix: str = "") -> dict:
    """``{"a.b": 1, "a": {"c": 2}}`` becomes ``{"a": {"b": 1, "c": 2}}``, however the spellings are mixed."""
    expanded: dict = {}
    for key, value in tree.items():
        parts = str(key).split(".")
        if isinstance(value, dict) and parts[-1] not in _FREE_FORM_MAPS:
            value = _expand_dotted_keys(value, f"{prefix}{key}.")
        _merge(expanded, parts, value, prefix + str(key))
    return expanded


def _merge(tree: dict, parts: list[str], value: Any, name: str) -> None:
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ActionsConfigError(f"setting {name} clashes with another setting")
    last = parts[-1]
    if last not in node:
        node[last] = value
    elif isinstance(node[last], dict) and isinstance(value, dict):
        for key, inner in value.items():
            _merge(node[last], [key], inner, f"{name}.{key}")
    else:
        raise ActionsConfigError(f"setting {name} is given twice")


def _mapping(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise ActionsConfigError(f"{name} must be a mapping")
    return value


def _header_map(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
        raise ActionsConfigError(f"{name} must map header names to strings")
    headers = {str(k): str(v) for k, v in value.items()}
    for header, text in headers.items():
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", header) or any(c in text for c in "\r\n\0"):
            raise ActionsConfigError(f"{name}: {header!r} is not a valid header name or its value holds a line break")
    return headers


def _flag(tree: dict, name: str) -> bool | None:
    value = tree.get(name)
    if value is not None and not isinstance(value, bool):
        raise ActionsConfigError(f"{name} must be true or false")
    return value


def _host_set(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(h, str) and h for h in value):
        raise ActionsConfigError(f"{name} must be a list of hostnames")
    return frozenset(h.lower() for h in value)


def _allowed_hosts(value: Any) -> tuple[str, ...]:
    hosts = set()
    for host in _host_set(value, "allowedHosts"):
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # an IPv6 address as written in a URL; URLs' hostnames come without brackets
        if host != "*" and ("/" in host or (":" in host and not _is_ip_address(host))):
            raise ActionsConfigError(f"allowedHosts takes hostnames without scheme or port, got {host!r}")
        hosts.add(host)
    return tuple(sorted(hosts))


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _mode(value: Any, name: str) -> str:
    if value not in VERIFICATION_MODES:
        raise ActionsConfigError(f"{name} must be one of {', '.join(VERIFICATION_MODES)}, got {value!r}")
    return value


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


CUSTOM_HOSTS = "In configuration xpack.actions.customHosts,"
_USERINFO = re.compile(r"(?<=//)[^/@]*@")


def _redacted(url: str) -> str:
    """A URL for a log line: Kibana's warnings quote it whole, but a password in its userinfo must not be logged."""
    return _USERINFO.sub("***@", url)


def _custom_host_settings(value: Any, warnings: list[str]) -> tuple[CustomHostSetting, ...]:
    """Each entry's ssl replaces the global ssl for its host, as in Kibana's axios_utils (docs/KIBANA.md 6.1): an
    entry without its own verificationMode means ``full``, and its certificate authorities replace the default trust
    store for that host.

    What Kibana's resolveCustomHosts only warns about is a warning here too, and start-up goes on: a URL that does not
    parse or uses another protocol than https or smtp (entry ignored), userinfo, a path or a hash (ignored), smtp
    properties on a non-smtp URL, a CA file that cannot be read (skipped), a second entry for the same host (the first
    wins). ``smtp://`` entries are kept, unused: this app sends no mail, but a kibana.yml that sets them must load."""
    if not isinstance(value, list):
        raise ActionsConfigError("customHostSettings must be a list")
    settings: list[CustomHostSetting] = []
    for index, entry in enumerate(value):
        name = f"customHostSettings[{index}]"
        entry = _mapping(entry, name)
        unknown = sorted(set(entry) - {"url", "ssl", "smtp"})
        if unknown:
            raise ActionsConfigError(f"unknown setting: {name}.{unknown[0]}")
        raw_url = entry.get("url")
        if not isinstance(raw_url, str) or not raw_url:
            raise ActionsConfigError(f"{name}.url must be a URL such as https://host:443 or smtp://host:25")
        url = _redacted(raw_url)
        try:
            parts = urlsplit(raw_url)
            port = parts.port
        except ValueError as exc:
            warnings.append(f'{CUSTOM_HOSTS} invalid URL "{url}", ignoring; error: {exc}')
            continue
        if not parts.scheme or not parts.hostname:
            warnings.append(f'{CUSTOM_HOSTS} invalid URL "{url}", ignoring; error: Invalid URL')
            continue
        if parts.scheme not in ("https", "smtp"):
            warnings.append(f'{CUSTOM_HOSTS} unsupported protocol used in URL "{url}", ignoring')
            continue
        if parts.username or parts.password:
            warnings.append(f'{CUSTOM_HOSTS} URL "{url}" contains authentication information which will be ignored, '
                            "but should be removed from the configuration")
        if parts.fragment:
            warnings.append(f'{CUSTOM_HOSTS} URL "{url}" contains hash information which will be ignored')
        if parts.path not in ("", "/"):
            warnings.append(f'{CUSTOM_HOSTS} URL "{url}" contains path information which will be ignored')
        if parts.scheme != "smtp" and entry.get("smtp"):
            warnings.append(f'{CUSTOM_HOSTS} URL "{url}" contains smtp properties but does not use smtp; ignoring '
                            "smtp properties")
        ssl = _mapping(entry.get("ssl") or {}, f"{name}.ssl")
        unknown = sorted(set(ssl) - {"verificationMode", "certificateAuthoritiesFiles", "certificateAuthoritiesData"})
        if unknown:
            raise ActionsConfigError(f"unknown setting: {name}.ssl.{unknown[0]}")
        files = ssl.get("certificateAuthoritiesFiles") or []
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not all(isinstance(path, str) for path in files):
            raise ActionsConfigError(f"{name}.ssl.certificateAuthoritiesFiles must be a list of file paths")
        files = [path for path in files if _readable_ca_file(path, warnings)]
        data = ssl.get("certificateAuthoritiesData") or ""
        if not isinstance(data, str) or (data and "BEGIN CERTIFICATE" not in data):
            raise ActionsConfigError(f"{name}.ssl.certificateAuthoritiesData must hold PEM certificates")
        if data:
            _check_certificates(f"{name}.ssl.certificateAuthoritiesData", cadata=data)
        setting = CustomHostSetting(
            scheme=parts.scheme,
            host=parts.hostname.lower(),
            port=port or default_port(parts.scheme),
            ssl=TLSSettings(
                verification_mode=_mode(ssl.get("verificationMode", "full"), f"{name}.ssl.verificationMode"),
                certificate_authorities_files=tuple(files),
                certificate_authorities_data=data,
            ),
        )
        if any((s.scheme, s.host, s.port) == (setting.scheme, setting.host, setting.port) for s in settings):
            warnings.append(f'{CUSTOM_HOSTS} multiple URLs match the canonical url '
                            f'"{setting.scheme}://{setting.host}:{setting.port}"; only the first will be used')
            continue
        settings.append(setting)
    return tuple(settings)


def _readable_ca_file(path: str, warnings: list[str]) -> bool:
    """Kibana reads each CA file at start-up and skips one it cannot read, with a warning; a file that reads but
    holds no certificate is skipped the same way here, since loading it would fail every call to the host."""
    try:
        Path(path).read_bytes()
        stdlib_ssl.create_default_context().load_verify_locations(cafile=path)
    except OSError as exc:
        warnings.append(f'error reading file "{path}" specified in xpack.actions.customHosts, ignoring: '
                        f"{exc.strerror or exc}")
        return False
    except (stdlib_ssl.SSLError, ValueError) as exc:
        warnings.append(f'error reading file "{path}" specified in xpack.actions.customHosts, ignoring: '
                        f"no usable PEM certificate ({exc})")
        return False
    return True


def _check_certificates(name: str, **source: str) -> None:
    """Load the CA certificates now, so a broken file fails at start-up and not on the first request."""
    try:
        stdlib_ssl.create_default_context().load_verify_locations(**source)
    except (stdlib_ssl.SSLError, ValueError, OSError) as exc:
        where = f" ({source['cafile']})" if "cafile" in source else ""
        raise ActionsConfigError(f"{name}{where} holds no usable PEM certificate: {exc}") from None


def _preconfigured(value: Any) -> dict[str, dict[str, Any]]:
    value = _mapping(value, "preconfigured")
    connectors = {}
    for connector_id, entry in value.items():
        name = f"preconfigured.{connector_id}"
        entry = _mapping(entry, name)
        if not isinstance(entry.get("actionTypeId"), str) or not entry["actionTypeId"]:
            raise ActionsConfigError(f"{name}.actionTypeId is required")
        if str(connector_id) in ("", "__proto__", "constructor"):
            raise ActionsConfigError(f'invalid preconfigured action id "{connector_id}"')
        if not str(entry.get("name") or "").strip():
            raise ActionsConfigError(f"{name}.name is required")
        unknown = sorted(set(entry) - {"actionTypeId", "name", "config", "secrets", "exposeConfig"})
        if unknown:
            raise ActionsConfigError(f"unknown setting: {name}.{unknown[0]}")
        # Connectors of other types are listed by the API and refused on execute, as Kibana refuses a type it does
        # not run (docs/KIBANA.md 5); only .gen-ai ones are validated and run.
        connectors[str(connector_id)] = {
            "actionTypeId": entry["actionTypeId"],
            "exposeConfig": entry.get("exposeConfig") is True,
            "name": str(entry["name"]),
            "config": _mapping(entry.get("config") or {}, f"{name}.config"),
            "secrets": _mapping(entry.get("secrets") or {}, f"{name}.secrets"),
        }
    return connectors
