"""Template helpers of the web faces: `{% asset "web/app.css" %}` (the hashed URL)."""

from __future__ import annotations

from django import template

from web.assets import asset_url

register = template.Library()


@register.simple_tag
def asset(name: str) -> str:
    return asset_url(name)
