"""Loading a shipped price file (usage/governance/data/prices-*.yaml) into the price table, from a migration."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_price_file(name: str) -> list[dict]:
    """The rows of one shipped price file, as keyword arguments of ``Price``."""
    document = yaml.safe_load((DATA_DIR / name).read_text())
    valid_from = document["valid_from"]
    if isinstance(valid_from, str):
        valid_from = dt.date.fromisoformat(valid_from)
    rows = []
    for entry in document["prices"]:
        rows.append(
            {
                "model_pattern": entry["model"],
                "valid_from": valid_from,
                "input_per_million": Decimal(entry["input"]),
                "cached_input_per_million": Decimal(entry["cached_input"]) if entry.get("cached_input") else None,
                "output_per_million": Decimal(entry["output"]),
                "reasoning_per_million": Decimal(entry["reasoning"]) if entry.get("reasoning") else None,
                "currency": document["currency"],
                "connector_id": "",
                "source": document["source"],
            }
        )
    return rows


def load_price_file(price_model, name: str) -> None:
    """Insert the file's prices; a version already in the table (same model, scope and day) is left as it is, so an
    administrator's correction made since is never overwritten."""
    for row in read_price_file(name):
        key = {k: row[k] for k in ("model_pattern", "connector_id", "valid_from")}
        price_model.objects.get_or_create(**key, defaults=row)
