"""The enumerations of the event log. Two of them name a "source", for unrelated things; the names keep them apart:
``EventSource`` is where a call came from (an API, the Test panel), ``UsageSource`` where its token counts came
from (the provider, an estimate, nowhere)."""

from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class EventSource(models.TextChoices):
    API = "api", "API (_execute)"
    UI_TEST = "ui_test", "UI test"
    OPENAI_API = "openai_api", "OpenAI-compatible API"


class UsageSource(models.TextChoices):
    PROVIDER = "provider", "Reported by the provider"
    ESTIMATED = "estimated", "Estimated with a tokenizer"
    NONE = "none", "None"
