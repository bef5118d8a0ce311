"""Read-only connectors defined in the ``preconfigured:`` section of ACTIONS_CONFIG (Kibana's shape)."""

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from connectors.actions_config import ActionsConfig
from connectors.models import CONNECTOR_TYPE_ID, Connector
from connectors.validation import api_key_error


def preconfigured_connectors() -> dict[str, Connector]:
    """The preconfigured ``.gen-ai`` connectors: the ones this app runs."""
    return _build(settings.ACTIONS_CONFIG)


def preconfigured_of_other_types() -> dict[str, Connector]:
    """Preconfigured connectors of other types (a kibana.yml's Slack or email connectors): listed by the API as
    Kibana lists them, refused on execute (docs/KIBANA.md 5). Unsaved instances with only id, type and name."""
    return _build_others(settings.ACTIONS_CONFIG)


@lru_cache(maxsize=4)
def _build_others(config: ActionsConfig) -> dict[str, Connector]:
    connectors = {}
    for connector_id, entry in config.preconfigured.items():
        if entry["actionTypeId"] != CONNECTOR_TYPE_ID:
            connector = Connector(id=connector_id, name=entry["name"], connector_type_id=entry["actionTypeId"])
            connector.is_preconfigured = True
            connectors[connector_id] = connector
    return connectors


@lru_cache(maxsize=4)
def _build(config: ActionsConfig) -> dict[str, Connector]:
    connectors = {}
    for connector_id, entry in config.preconfigured.items():
        if entry["actionTypeId"] != CONNECTOR_TYPE_ID:
            continue
        cfg = entry["config"]
        connector = Connector(
            id=connector_id,
            name=entry["name"],
            provider=cfg.get("apiProvider", ""),
            api_url=cfg.get("apiUrl", ""),
            default_model=cfg.get("defaultModel", "") or "",
            headers=cfg.get("headers") or {},
            organization_id=cfg.get("organizationId", "") or "",
            project_id=cfg.get("projectId", "") or "",
            context_window_length=cfg.get("contextWindowLength"),
            temperature=cfg.get("temperature"),
            enable_native_function_calling=cfg.get("enableNativeFunctionCalling"),
            verification_mode=cfg.get("verificationMode", "") or "",
            timeout_ms=cfg.get("timeout"),
        )
        secrets = entry["secrets"]
        connector.api_key = str(secrets.get("apiKey") or "")
        connector.certificate_data = str(secrets.get("certificateData") or "")
        connector.private_key_data = str(secrets.get("privateKeyData") or "")
        connector.ca_data = str(secrets.get("caData") or "")
        connector.is_preconfigured = True
        connector.expose_config = entry["exposeConfig"]
        try:
            connector.clean_fields(exclude=["created_by", "space"])  # in every space: no row to check
            connector.clean()
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            raise ImproperlyConfigured(f"ACTIONS_CONFIG: preconfigured.{connector_id}: {problems}") from None
        key_problem = api_key_error(connector.api_key)
        if key_problem:
            raise ImproperlyConfigured(f"ACTIONS_CONFIG: preconfigured.{connector_id}: secrets.apiKey: {key_problem}")
        connectors[connector_id] = connector
    return connectors
