"""How a host name is shown: whole, or wrapped between its labels when the column is narrow, never mid-word."""

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.filter
def wrap_at_dots(host: str) -> SafeString:
    """``api.openai.com`` with a line-break opportunity (``<wbr>``, copied as nothing) after each dot."""
    return mark_safe(escape(host).replace(".", ".<wbr>"))  # noqa: S308 - escaped first; only <wbr> is added
