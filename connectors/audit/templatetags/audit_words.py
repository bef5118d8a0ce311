"""The audit trail's stored names (``sign_in``, ``error_rate_rule``) as words on its page; the stored values,
which filters and exports use, stay as they are."""

from django import template

register = template.Library()


@register.filter
def words(value: str) -> str:
    return str(value).replace("_", " ")
