"""Read-only connectors defined in the ``preconfigured:`` section of ACTIONS_CONFIG (Kibana's shape)."""

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from connectors.models import Connector
from connectors.validation import api_key_error
from connectors_admin.actions_config import ActionsConfig


def preconfigured_connectors() -> dict[str, Connector]:
    return _build(settings.ACTIONS_CONFIG)


@lru_cache(maxsize=4)
def _build(config: ActionsConfig) -> dict[str, Connector]:
    connectors = {}
    for connector_id, entry in config.preconfigured.items():
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
        )
        connector.api_key = str(entry["secrets"].get("apiKey") or "")
        connector.is_preconfigured = True
        try:
            connector.clean_fields(exclude=["created_by"])
            connector.clean()
        except ValidationError as exc:
            problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            raise ImproperlyConfigured(f"ACTIONS_CONFIG: preconfigured.{connector_id}: {problems}") from None
        key_problem = api_key_error(connector.api_key)
        if key_problem:
            raise ImproperlyConfigured(f"ACTIONS_CONFIG: preconfigured.{connector_id}: secrets.apiKey: {key_problem}")
        connectors[connector_id] = connector
    return connectors
