"""Reading a Kibana connector body (create/update) onto a Connector, with Kibana's error sentences.

The messages are the ones Kibana's API integration tests assert (docs/KIBANA.md 1.1, 1.2, 3): route-level body
errors as ``[request body.<key>]: expected value of type [<type>] but got [<actual>]``, connector-type errors
behind ``error validating action type config: `` or ``error validating action type secrets: ``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from connectors import validation
from connectors.api.endpoint import ApiError
from connectors.models import CONNECTOR_TYPE_ID, Connector, Provider, VerificationMode
from connectors.validation import CONFIG_ERROR_PREFIX, SECRETS_ERROR_PREFIX, schema_type_of

# Kibana's config-schema union listed the provider branches in this order (the integration test's messages).
UNION_BRANCHES = (Provider.AZURE, Provider.OPENAI, Provider.OTHER)
# Config keys per provider branch (Kibana's strict ConfigSchema). This app's per-connector timeout is not one of
# them: it is set in the connector form, and the API refuses the key as Kibana does (docs/KIBANA.md 1.1).
COMMON_KEYS = ("apiProvider", "apiUrl", "defaultModel", "headers", "contextWindowLength", "temperature")
BRANCH_KEYS = {
    Provider.OPENAI: (*COMMON_KEYS, "organizationId", "projectId"),
    Provider.AZURE: COMMON_KEYS,
    Provider.OTHER: (*COMMON_KEYS, "verificationMode", "enableNativeFunctionCalling"),
}
SECRET_KEYS = {"apiKey": "api_key", "certificateData": "certificate_data", "privateKeyData": "private_key_data",
               "caData": "ca_data"}
PKI_KEYS = ("certificateData", "privateKeyData", "caData")
# Model field -> Kibana's key, for the messages of the model's own checks.
CONFIG_KEY_OF_FIELD = {
    "provider": "apiProvider", "api_url": "apiUrl", "default_model": "defaultModel", "headers": "headers",
    "organization_id": "organizationId", "project_id": "projectId", "context_window_length": "contextWindowLength",
    "temperature": "temperature", "enable_native_function_calling": "enableNativeFunctionCalling",
    "verification_mode": "verificationMode", "timeout_ms": "timeout", "name": "name", "id": "id",
}
SECRET_FIELDS = {"api_key": "apiKey", "certificate_data": "certificateData", "private_key_data": "privateKeyData",
                 "ca_data": "caData"}


def body_type_error(path: str, expected: str, value: Any, present: bool = True) -> ApiError:
    actual = schema_type_of(value) if present else "undefined"
    return ApiError(400, f"[request body.{path}]: expected value of type [{expected}] but got [{actual}]")


def apply_payload(connector: Connector, body: dict, *, creating: bool) -> None:
    """Copy a Kibana-shaped body onto ``connector``; ApiError(400) with Kibana's sentence for anything wrong."""
    allowed = {"name", "config", "secrets"} | ({"connector_type_id"} if creating else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"[request body.{unknown[0]}]: definition for this key is missing")
    if creating:
        type_id = body.get("connector_type_id")
        if not isinstance(type_id, str):
            raise body_type_error("connector_type_id", "string", type_id, "connector_type_id" in body)
        if type_id != CONNECTOR_TYPE_ID:
            raise ApiError(400, f'Action type "{type_id}" is not registered.')
    if not isinstance(body.get("name"), str):
        raise body_type_error("name", "string", body.get("name"), "name" in body)
    if not body["name"].strip():
        raise ApiError(400, "[request body.name]: value '' is not valid")
    config = body.get("config", {})
    if not isinstance(config, dict):
        raise body_type_error("config", "object", config)
    secrets = body.get("secrets", {})
    if not isinstance(secrets, dict):
        raise body_type_error("secrets", "object", secrets)

    provider = _check_config(config)
    _check_secrets(secrets, provider)

    connector.name = body["name"]
    connector.provider = provider
    connector.api_url = config["apiUrl"]
    connector.default_model = config.get("defaultModel") or ""
    if provider == Provider.OPENAI and not connector.default_model.strip():
        connector.default_model = validation.OPENAI_DEFAULT_MODEL  # stored, as Kibana's schema default is
    connector.headers = config.get("headers") or {}
    connector.organization_id = config.get("organizationId") or ""
    connector.project_id = config.get("projectId") or ""
    connector.context_window_length = _number(config, "contextWindowLength", integer=True)
    connector.temperature = _number(config, "temperature")
    connector.enable_native_function_calling = config.get("enableNativeFunctionCalling")
    connector.verification_mode = config.get("verificationMode") or ""
    # Kibana replaces the secrets with what a body sends; a body without secrets keeps the stored ones (docs/KIBANA.md
    # 3: a script renaming a connector need not hold the provider's key), unless the URL moves to another origin.
    if secrets:
        for key, attribute in SECRET_KEYS.items():
            # Kibana accepts PKI secrets on any provider and uses them only for Other: here they are not kept
            # where they would not be used (docs/KIBANA.md 1.2).
            keep = provider == Provider.OTHER or key not in PKI_KEYS
            setattr(connector, attribute, (secrets.get(key) or "") if keep else "")
    # Other may run keyless (a local server): docs/KIBANA.md 1.2 says why this differs from Kibana.
    if provider in (Provider.OPENAI, Provider.AZURE) and not connector.has_api_key:
        raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[apiKey]: expected value of type [string] but got [undefined]")
    if connector.moves_stored_key_to_another_origin():
        # Kibana asks for the secrets on every update; here only when the key would follow the URL elsewhere.
        raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[apiKey]: expected value of type [string] but got [undefined] "
                            "(config.apiUrl now reaches another scheme, host or port: send secrets.apiKey again)")
    try:
        connector.full_clean(exclude=["created_by"], validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        text = " ".join(messages)
        if field in SECRET_FIELDS:
            raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[{SECRET_FIELDS[field]}]: {text}") from None
        raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[{CONFIG_KEY_OF_FIELD.get(field, field)}]: {text}") from None


def _check_config(config: dict) -> str:
    """Kibana's ConfigSchema union and configValidator; returns the provider."""
    provider = config.get("apiProvider")
    if provider not in Provider.values:
        if provider is None:
            reasons = [f"[{i}.apiProvider]: expected at least one defined value but got [undefined]"
                       for i in range(len(UNION_BRANCHES))]
        else:
            reasons = [f"[{i}.apiProvider]: expected value to equal [{branch}]" for i, branch in enumerate(UNION_BRANCHES)]
        raise _union_error(reasons)
    api_url = config.get("apiUrl")
    if not isinstance(api_url, str):
        reasons = [
            f"[{i}.apiUrl]: expected value of type [string] but got [{schema_type_of(api_url) if 'apiUrl' in config else 'undefined'}]"
            if branch == provider else f"[{i}.apiProvider]: expected value to equal [{branch}]"
            for i, branch in enumerate(UNION_BRANCHES)
        ]
        raise _union_error(reasons)
    unknown = sorted(set(config) - set(BRANCH_KEYS[provider]))
    if unknown:
        raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[{unknown[0]}]: definition for this key is missing")
    for key in ("defaultModel", "organizationId", "projectId"):
        if key in config and not isinstance(config[key], str):
            raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[{key}]: expected value of type [string] but got "
                                f"[{schema_type_of(config[key])}]")
    if "enableNativeFunctionCalling" in config and not isinstance(config["enableNativeFunctionCalling"], bool):
        raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[enableNativeFunctionCalling]: expected value of type [boolean] "
                            f"but got [{schema_type_of(config['enableNativeFunctionCalling'])}]")
    if "verificationMode" in config and config["verificationMode"] not in VerificationMode.values:
        raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[verificationMode]: expected one of "
                            f"[{', '.join(VerificationMode.values)}] but got [{config['verificationMode']}]")
    for key in ("contextWindowLength", "temperature"):
        _number(config, key, integer=key != "temperature")
    url_problem = validation.kibana_url_error(api_url)
    if url_problem:
        raise ApiError(400, CONFIG_ERROR_PREFIX + url_problem)
    return provider


def _union_error(reasons: list[str]) -> ApiError:
    return ApiError(400, CONFIG_ERROR_PREFIX + "types that failed validation:\n" + "\n".join(f"- {r}" for r in reasons))


def _number(config: dict, key: str, *, integer: bool = False) -> float | int | None:
    """A number, or a string holding one (Kibana coerces these keys); None when absent."""
    value = config.get(key)
    if value is None:
        return None
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or number != number or number in (float("inf"), float("-inf")):
        raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[{key}]: expected value of type [number] but got "
                            f"[{schema_type_of(value)}]")
    if integer:
        if number != int(number) or number <= 0:
            raise ApiError(400, f"{CONFIG_ERROR_PREFIX}[{key}]: expected a positive whole number but got [{value}]")
        return int(number)
    return float(number)


def _check_secrets(secrets: dict, provider: str) -> None:
    """Kibana's SecretsSchema and secrets validator (PKI when any PKI key is sent)."""
    unknown = sorted(set(secrets) - set(SECRET_KEYS))
    if unknown:
        raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[{unknown[0]}]: definition for this key is missing")
    for key, value in secrets.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[{key}]: expected value of type [string] but got "
                                f"[{schema_type_of(value)}]")
    if any(secrets.get(key) is not None for key in PKI_KEYS):
        problem = validation.pki_secrets_error(
            secrets.get("certificateData") or "", secrets.get("privateKeyData") or "", secrets.get("caData") or ""
        )
        if problem:
            raise ApiError(400, SECRETS_ERROR_PREFIX + problem)
    api_key = secrets.get("apiKey")
    if api_key:
        problem = validation.api_key_error(api_key)
        if problem:
            raise ApiError(400, f"{SECRETS_ERROR_PREFIX}[apiKey]: {problem}")
