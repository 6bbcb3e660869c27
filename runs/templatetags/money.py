"""`{{ value|money }}`: an amount in settings.CURRENCY, as every page shows costs."""

from django import template
from django.conf import settings

register = template.Library()


@register.filter
def money(value: float | None) -> str:
    if value is None:
        return "—"
    # Cents hide what a sweep on a cheap model costs: small amounts keep four decimals.
    digits = 4 if 0 < abs(value) < 0.01 else 2
    return f"{value:,.{digits}f} {settings.CURRENCY}"
