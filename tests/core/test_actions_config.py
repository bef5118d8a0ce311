"""The ACTIONS_CONFIG YAML file: Kibana's xpack.actions keys in any of kibana.yml's spellings, sizes and durations,
and a malformed file stopping start-up with ImproperlyConfigured naming the key."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connectors.actions_config import (
    ActionsConfig,
    ActionsConfigError,
    load_actions_config,
    parse_actions_config,
    parse_byte_size,
    parse_duration_seconds,
)
from tests.servers.tls import CertificateAuthority

ROOT = Path(__file__).resolve().parents[2]

# The examples of docs/_readme_networking.md, verbatim: if one stops loading, the README is wrong.
NESTED_EXAMPLE = """\
xpack:
  actions:
    allowedHosts: ["api.openai.com", "my-resource.openai.azure.com", "llm.internal.example"]
    proxyUrl: http://proxy.internal.example:3128
    proxyHeaders:
      Proxy-Authorization: Basic dXNlcjpwYXNz
    proxyBypassHosts: ["llm.internal.example"]
    ssl:
      verificationMode: full
      proxyVerificationMode: full
    customHostSettings:
      - url: https://llm.internal.example:8443
        ssl:
          verificationMode: certificate
          certificateAuthoritiesFiles: ["{ca_file}"]
    maxResponseContentLength: 10mb
    responseTimeout: 120s
"""

DOTTED_EXAMPLE = """\
xpack.actions.allowedHosts: ["api.openai.com", "localhost"]
xpack.actions.ssl.verificationMode: none
xpack.actions.responseTimeout: 90s
"""

TOP_LEVEL_EXAMPLE = """\
allowedHosts: ["*"]
proxyUrl: http://proxy.internal.example:3128
proxyOnlyHosts: ["api.openai.com"]
maxResponseContentLength: 2mb
responseTimeout: 30s
customHostSettings:
  - url: https://llm.internal.example
    ssl:
      certificateAuthoritiesData: |
{ca_pem}"""


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


def load(tmp_path, text: str) -> ActionsConfig:
    path = tmp_path / "actions.yml"
    path.write_text(text)
    return load_actions_config(path)


def test_no_file_means_kibanas_defaults():
    config = load_actions_config("")
    assert config.allowed_hosts == ("*",)
    assert config.max_response_content_length == 1024 * 1024 and config.response_timeout == 60
    assert config.ssl.verification_mode == "full" and config.proxy_verification_mode == "full"
    assert config.proxy_url == "" and config.custom_host_settings == () and config.preconfigured == {}


def test_an_empty_file_means_kibanas_defaults(tmp_path):
    assert load(tmp_path, "") == ActionsConfig()


def test_a_kibana_yml_section_nested_under_xpack_actions_loads(tmp_path, ca):
    config = load(tmp_path, NESTED_EXAMPLE.format(ca_file=ca.cert_file))
    assert config.allowed_hosts == ("api.openai.com", "llm.internal.example", "my-resource.openai.azure.com")
    assert config.proxy_url == "http://proxy.internal.example:3128"
    assert config.proxy_headers == (("Proxy-Authorization", "Basic dXNlcjpwYXNz"),)
    assert config.proxy_bypass_hosts == {"llm.internal.example"}
    assert config.uses_proxy_for("api.openai.com") and not config.uses_proxy_for("LLM.internal.example")
    assert config.max_response_content_length == 10 * 1024 * 1024 and config.response_timeout == 120
    (custom,) = config.custom_host_settings
    assert (custom.scheme, custom.host, custom.port) == ("https", "llm.internal.example", 8443)
    assert custom.ssl.verification_mode == "certificate"
    assert custom.ssl.certificate_authorities_files == (str(ca.cert_file),)
    assert config.custom_host_setting_for("https", "llm.internal.example", 8443) is custom
    assert config.custom_host_setting_for("https", "llm.internal.example", None) is None


def test_dotted_kibana_keys_load(tmp_path):
    config = load(tmp_path, DOTTED_EXAMPLE)
    assert config.allowed_hosts == ("api.openai.com", "localhost")
    assert config.ssl.verification_mode == "none" and config.response_timeout == 90


def test_top_level_keys_load(tmp_path, ca):
    config = load(tmp_path, TOP_LEVEL_EXAMPLE.format(ca_pem=textwrap.indent(ca.pem, " " * 8)))
    assert config.allowed_hosts == ("*",) and config.is_host_allowed("anything.example")
    assert config.proxy_only_hosts == {"api.openai.com"}
    assert config.uses_proxy_for("api.openai.com") and not config.uses_proxy_for("llm.internal.example")
    assert config.max_response_content_length == 2 * 1024 * 1024 and config.response_timeout == 30
    (custom,) = config.custom_host_settings
    assert custom.port == 443 and custom.ssl.certificate_authorities_data.strip() == ca.pem.strip()


def test_mixed_spellings_are_merged_not_overwritten():
    config = parse_actions_config({
        "xpack.actions.allowedHosts": ["a.example"],
        "xpack": {"actions": {"ssl": {"proxyVerificationMode": "none"}, "ssl.verificationMode": "certificate"}},
    })
    assert config.allowed_hosts == ("a.example",)
    assert (config.ssl.verification_mode, config.proxy_verification_mode) == ("certificate", "none")


def test_top_level_keys_and_xpack_actions_keys_combine():
    config = parse_actions_config({"responseTimeout": "5s", "xpack": {"actions": {"allowedHosts": ["a.example"]}}})
    assert config.response_timeout == 5 and config.allowed_hosts == ("a.example",)


def test_dots_inside_connector_ids_and_header_names_are_kept():
    config = parse_actions_config({
        "proxyHeaders": {"X-Trace.Id": "1"},
        "preconfigured": {"openai.prod": {"name": "Prod", "actionTypeId": ".gen-ai",
                                          "config": {"headers": {"X-Team.Name": "search"}}}},
    })
    assert config.proxy_headers == (("X-Trace.Id", "1"),)
    assert config.preconfigured["openai.prod"]["config"]["headers"] == {"X-Team.Name": "search"}


def test_allowed_hosts_are_case_insensitive_and_an_empty_list_blocks_all():
    config = parse_actions_config({"allowedHosts": ["API.OpenAI.com"]})
    assert config.is_host_allowed("api.openai.com") and config.is_host_allowed("API.OPENAI.COM")
    assert not config.is_host_allowed("evil.example")
    assert not parse_actions_config({"allowedHosts": []}).is_host_allowed("api.openai.com")


def test_allowed_hosts_take_ip_addresses_including_ipv6():
    config = parse_actions_config({"allowedHosts": ["127.0.0.1", "::1", "[fd00::5]"]})
    assert config.is_host_allowed("::1") and config.is_host_allowed("fd00::5") and config.is_host_allowed("127.0.0.1")


def test_kibana_7_reject_unauthorized_false_means_verification_mode_none():
    config = parse_actions_config({"rejectUnauthorized": False, "proxyRejectUnauthorizedCertificates": False})
    assert (config.ssl.verification_mode, config.proxy_verification_mode) == ("none", "none")
    explicit = parse_actions_config({"rejectUnauthorized": False, "ssl": {"verificationMode": "full"}})
    assert explicit.ssl.verification_mode == "full"


@pytest.mark.parametrize(
    "value, size",
    [("1mb", 1048576), ("512kb", 524288), ("100b", 100), ("1gb", 1024**3), (2048, 2048), (" 2 MB ", 2097152), ("10", 10)],
)
def test_byte_sizes(value, size):
    assert parse_byte_size(value, "maxResponseContentLength") == size


@pytest.mark.parametrize("value", ["0", "0mb", -1, "1.5mb", "lots", True, "1tb", "", None])
def test_bad_byte_sizes_name_the_key(value):
    with pytest.raises(ActionsConfigError, match="maxResponseContentLength must be a size such as 1mb"):
        parse_byte_size(value, "maxResponseContentLength")


@pytest.mark.parametrize(
    "value, seconds",
    [("500ms", 0.5), ("60s", 60), ("5m", 300), ("1h", 3600), ("1d", 86400), (250, 0.25), ("1.5s", 1.5), ("300", 0.3)],
)
def test_durations(value, seconds):
    assert parse_duration_seconds(value, "responseTimeout") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["0s", "soon", "-5s", True, "5 minutes", 0, None])
def test_bad_durations_name_the_key(value):
    with pytest.raises(ActionsConfigError, match="responseTimeout must be a duration such as 60s"):
        parse_duration_seconds(value, "responseTimeout")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"allowedHosts": "*"}, "allowedHosts must be a list of hostnames"),
        ({"allowedHosts": ["https://api.openai.com"]}, "allowedHosts takes hostnames without scheme or port"),
        ({"allowedHosts": ["api.openai.com:443"]}, "allowedHosts takes hostnames without scheme or port"),
        ({"proxyHeaders": ["X-A: 1"]}, "proxyHeaders must map header names to strings"),
        ({"proxyHeaders": {"X-A": "1\r\nX-B: 2"}}, "proxyHeaders: 'X-A' is not a valid header name"),
        ({"ssl": {"verificationMode": "strict"}}, "ssl.verificationMode must be one of full, certificate, none"),
        ({"ssl": {"proxyVerificationMode": False}}, "ssl.proxyVerificationMode must be one of"),
        ({"ssl": {"certificateAuthorities": []}}, "unknown setting: ssl.certificateAuthorities"),
        ({"maxResponseContentLength": "huge"}, "maxResponseContentLength must be a size"),
        ({"responseTimeout": "forever"}, "responseTimeout must be a duration"),
        ({"allowedHost": ["a"]}, "unknown setting(s): allowedHost"),
        ({"customHostSettings": {"url": "https://a"}}, "customHostSettings must be a list"),
        ({"customHostSettings": [{"url": ""}]}, "customHostSettings[0].url must be a URL"),
        ({"customHostSettings": [{"url": "https://a", "ssl": {"verificationmode": "none"}}]},
         "unknown setting: customHostSettings[0].ssl.verificationmode"),
        ({"customHostSettings": [{"url": "https://a", "tls": {}}]}, "unknown setting: customHostSettings[0].tls"),
        ({"customHostSettings": [{"url": "https://a", "ssl": {"verificationMode": "off"}}]},
         "customHostSettings[0].ssl.verificationMode must be one of"),
        ({"customHostSettings": [{"url": "https://a", "ssl": {"certificateAuthoritiesData": "not a certificate"}}]},
         "customHostSettings[0].ssl.certificateAuthoritiesData must hold PEM certificates"),
        ({"customHostSettings": [{"url": "https://a", "ssl": {
            "certificateAuthoritiesData": "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"}}]},
         "customHostSettings[0].ssl.certificateAuthoritiesData holds no usable PEM certificate"),
        ({"allowedHosts": ["a"], "xpack.actions.allowedHosts": ["b"]}, "allowedHosts is set both at the top level"),
        ({"ssl.verificationMode": "none", "ssl": {"verificationMode": "full"}}, "setting ssl.verificationMode is given twice"),
        ({"rejectUnauthorized": "no"}, "rejectUnauthorized must be true or false"),
        ({"preconfigured": {"x": {"name": "X"}}}, "preconfigured.x.actionTypeId is required"),
        ([], "the file must hold a mapping of settings"),
    ],
)
def test_bad_settings_name_the_key(raw, message):
    with pytest.raises(ActionsConfigError) as error:
        parse_actions_config(raw)
    assert message in str(error.value)


def test_a_ca_file_without_certificates_is_skipped_with_a_warning(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    config = parse_actions_config(
        {"customHostSettings": [{"url": "https://a", "ssl": {"certificateAuthoritiesFiles": str(bad)}}]})
    assert config.custom_host_settings[0].ssl.certificate_authorities_files == ()
    assert config.warnings[0].startswith(f'error reading file "{bad}" specified in xpack.actions.customHosts, ignoring')


def test_kibana_yml_email_settings_load_smtp_entries_are_kept_unused():
    """Kibana's own way to set TLS for mail servers: an smtp:// customHostSettings entry (config.ts)."""
    config = parse_actions_config({"xpack.actions.customHostSettings": [
        {"url": "smtp://mail.example.com:465", "smtp": {"requireTLS": True}, "ssl": {"verificationMode": "none"}},
        {"url": "smtp://mail2.example.com"},
        {"url": "https://api.example.com"},
    ]})
    assert [(s.scheme, s.host, s.port) for s in config.custom_host_settings] == [
        ("smtp", "mail.example.com", 465), ("smtp", "mail2.example.com", 25), ("https", "api.example.com", 443)]
    assert config.warnings == ()
    # Never matched by an http(s) request, so they change nothing outbound.
    assert config.custom_host_setting_for("https", "mail.example.com", 465) is None


def test_an_invalid_proxy_url_warns_as_kibana_does_and_the_proxy_is_not_used():
    config = parse_actions_config({"proxyUrl": "proxy.internal:3128"})
    assert config.warnings == ("The configuration xpack.actions.proxyUrl: proxy.internal:3128 is invalid.",)
    assert config.proxy_url == "" and not config.uses_proxy_for("api.openai.com")
    config = parse_actions_config({"proxyUrl": "socks5://user:s3cret@proxy:1080"})
    assert config.warnings == ("The configuration xpack.actions.proxyUrl: socks5://***@proxy:1080 is invalid.",)


def test_an_unreadable_ca_file_is_skipped_with_kibanas_warning_and_start_up_goes_on():
    config = parse_actions_config(
        {"customHostSettings": [{"url": "https://a", "ssl": {"certificateAuthoritiesFiles": ["/nonexistent/ca.pem"]}}]})
    assert config.custom_host_settings[0].ssl.certificate_authorities_files == ()
    assert config.warnings == ('error reading file "/nonexistent/ca.pem" specified in xpack.actions.customHosts, '
                               "ignoring: No such file or directory",)


def test_custom_host_urls_kibana_only_warns_about_are_warned_about():
    config = parse_actions_config({"customHostSettings": [
        {"url": "not a url"}, {"url": "https://user:pw@a.example/path#x"}, {"url": "https://a.example:443"},
        {"url": "https://b.example", "smtp": {"ignoreTLS": True}},
    ]})
    assert [s.host for s in config.custom_host_settings] == ["a.example", "b.example"]
    text = "\n".join(config.warnings)
    assert 'invalid URL "not a url", ignoring' in text
    assert "contains authentication information" in text and "contains hash information" in text
    assert "contains path information" in text
    assert 'multiple URLs match the canonical url "https://a.example:443"; only the first will be used' in text
    assert "contains smtp properties but does not use smtp" in text
    assert "pw" not in text  # the password of a URL's userinfo is never logged


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    with pytest.raises(ActionsConfigError, match="is not valid YAML"):
        load(tmp_path, "allowedHosts: [unclosed\n")


# --- through settings.py, as the server starts ----------------------------------------------------------------

def start_django(actions_config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ACTIONS_CONFIG")}
    env.update({
        "ENV_FILE": "",
        "DEBUG": "false",
        "SECRET_KEY": "start-up-test-secret",
        "CONNECTORS_ENCRYPTION_KEYS": "p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=",
        "DJANGO_SETTINGS_MODULE": "connectors_admin.settings",
        "ACTIONS_CONFIG": str(actions_config),
    })
    code = "import django; django.setup(); from django.conf import settings; print(settings.ACTIONS_CONFIG.allowed_hosts)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "text, message",
    [
        ("xpack.actions.maxResponseContentLength: lots\n",
         "ImproperlyConfigured: ACTIONS_CONFIG: maxResponseContentLength must be a size such as 1mb, got 'lots'"),
    ],
    ids=["bad-size"],
)
def test_a_bad_file_stops_start_up_naming_the_key(tmp_path, text, message):
    path = tmp_path / "actions.yml"
    path.write_text(text)
    result = start_django(path)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_good_file_is_what_settings_hold(tmp_path):
    path = tmp_path / "actions.yml"
    path.write_text(DOTTED_EXAMPLE)
    result = start_django(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('api.openai.com', 'localhost')"


def test_a_host_entry_without_its_own_verification_mode_means_full_as_in_kibana():
    # Kibana's axios_utils recomputes rejectUnauthorized from
    # the entry's own mode, so an entry without one is full (docs/KIBANA.md 6.1).
    config = parse_actions_config({"ssl": {"verificationMode": "none"}, "customHostSettings": [
        {"url": "https://a.example"}, {"url": "https://b.example", "ssl": {"verificationMode": "certificate"}}]})
    unset, own = config.custom_host_settings
    assert unset.ssl.verification_mode == "full" and own.ssl.verification_mode == "certificate"


def test_the_example_file_in_docs_loads(tmp_path, ca):
    # Its CA path is a placeholder; everything else loads as written.
    text = (ROOT / "docs" / "actions.example.yml").read_text().replace("/etc/ssl/private-ca.pem", str(ca.cert_file))
    config = load(tmp_path, text)
    assert "api.openai.com" in config.allowed_hosts and config.custom_host_settings
    assert config.preconfigured["shared-openai"]["config"]["apiProvider"] == "OpenAI"


# --- a whole kibana.yml as ACTIONS_CONFIG (docs/KIBANA.md 5, 6) ---

KIBANA_YML = """
server.port: 5601
server.host: "0.0.0.0"
elasticsearch.hosts: ["https://es:9200"]
elasticsearch.password: "es-secret-password"
xpack.security.encryptionKey: "a-very-secret-encryption-key-0123456789"
xpack.actions.allowedHosts: ["api.openai.com"]
xpack.actions.enabledActionTypes: [".gen-ai", ".slack"]
xpack.actions.preconfigured:
  team-slack:
    name: Team Slack
    actionTypeId: .slack
    secrets:
      webhookUrl: https://hooks.slack.com/services/XXX
"""


def test_a_real_kibana_yml_loads_and_lists_what_it_ignored_by_name(tmp_path):
    config = load(tmp_path, KIBANA_YML)
    assert config.allowed_hosts == ("api.openai.com",)
    assert config.enabled_action_types == (".gen-ai", ".slack")
    assert set(config.ignored_keys) == {"xpack.security", "server", "elasticsearch"}
    assert config.preconfigured["team-slack"]["actionTypeId"] == ".slack"


def test_kibana_sections_mark_a_file_as_kibana_yml_even_without_xpack():
    config = parse_actions_config({"server": {"port": 5601}, "logging": {"root": {"level": "info"}}})
    assert set(config.ignored_keys) == {"server", "logging"}


def test_ignored_keys_are_logged_once_at_info_by_name_only(tmp_path):
    path = tmp_path / "kibana.yml"
    path.write_text(KIBANA_YML)
    env = dict(os.environ, ACTIONS_CONFIG=str(path), ENV_FILE="", DEBUG="false",
               SECRET_KEY="x" * 50, CONNECTORS_ENCRYPTION_KEYS="p6S0Bi6Mn5mDNjsC5nWxGZA0Y0pvjW2sJqHjeIuQoxo=")
    code = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s');"
        "import django; django.setup()"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "ignoring settings outside xpack.actions" in line]
    assert len(lines) == 1 and " INFO connectors.actions_config " in lines[0]
    assert "xpack.security" in lines[0] and "server" in lines[0] and "elasticsearch" in lines[0]
    assert "es-secret-password" not in result.stderr and "a-very-secret-encryption-key" not in result.stderr


def test_proxy_bypass_and_only_hosts_together_warn_and_bypass_wins_as_in_kibana():
    config = parse_actions_config({"proxyUrl": "http://p:3128", "proxyBypassHosts": ["a"], "proxyOnlyHosts": ["b"]})
    assert config.warnings == (
        "The configurations xpack.actions.proxyBypassHosts and xpack.actions.proxyOnlyHosts can not be used at the "
        "same time. The configuration xpack.actions.proxyOnlyHosts will be ignored.",
    )
    assert config.proxy_only_hosts == frozenset()
    assert not config.uses_proxy_for("a") and config.uses_proxy_for("c")


def test_an_http_custom_host_entry_is_ignored_with_kibanas_warning():
    config = parse_actions_config({"customHostSettings": [{"url": "http://plain.example:8080"}]})
    assert config.custom_host_settings == ()
    assert config.warnings == (
        'In configuration xpack.actions.customHosts, unsupported protocol used in URL "http://plain.example:8080", '
        "ignoring",
    )


def test_enabled_action_types_default_to_everything_and_must_be_a_list():
    assert parse_actions_config({}).is_action_type_enabled(".gen-ai")
    config = parse_actions_config({"enabledActionTypes": [".slack"]})
    assert not config.is_action_type_enabled(".gen-ai") and config.is_action_type_enabled(".slack")
    with pytest.raises(ActionsConfigError, match="enabledActionTypes must be a list"):
        parse_actions_config({"enabledActionTypes": ".gen-ai"})
