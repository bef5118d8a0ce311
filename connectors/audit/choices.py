"""Choices that must be importable before Django's app registry is ready (manage.py uses them)."""

from django.db import models


class Via(models.TextChoices):
    """How a change was made."""

    PAGE = "page", "page"
    API = "api", "API"
    ADMIN = "admin", "admin"
    COMMAND = "command", "command"
    SSO = "sso", "SSO"
    SYSTEM = "system", "system"
