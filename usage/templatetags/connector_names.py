"""Connectors named, not numbered: a connector id becomes its name, linked to its page."""

from django import template
from django.urls import reverse
from django.utils.html import format_html

from connectors.lookup import connector_name

register = template.Library()


@register.filter
def connector_label(connector_id: str) -> str:
    """The connector's name, or that it was deleted (with the id, the only thing left of it)."""
    return connector_name(connector_id) or f"deleted connector {connector_id}"


@register.filter
def connector_link(connector_id: str) -> str:
    """The connector's name linked to its page; plain text when it was deleted."""
    name = connector_name(connector_id)
    if not name:
        return format_html('<span class="help">deleted connector <code>{}</code></span>', connector_id)
    return format_html('<a href="{}">{}</a>', reverse("connectors:detail", args=[connector_id]), name)
