"""An audit record's changes as people read them: field names in words, connectors by name."""

from connectors.lookup import all_connectors

# Field names whose words alone would mislead or read badly.
LABELS = {"connector_id": "Connector", "api_key": "API key", "api_url": "API URL", "user": "User",
          "secrets": "Secrets", "config": "Configuration"}


FOLD_LONGER_THAN = 160


def field_label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def readable_changes(records) -> list:
    """Give each record ``lines``: (label, text) pairs, with connector ids replaced by the connectors' names."""
    names = {connector.pk: connector.name for connector in all_connectors()}
    for record in records:
        lines = []
        for field, text in record.change_lines:
            if field == "connector_id":
                for connector_id, name in names.items():
                    text = text.replace(connector_id, name)
            lines.append((field_label(field), text))
        record.lines = lines
        # Folded behind "N fields" when it would make a tall row: several fields, or one long list (a role's
        # permissions).
        record.folded = len(lines) > 2 or any(len(text) > FOLD_LONGER_THAN for _, text in lines)
    return records
