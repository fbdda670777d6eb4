"""What the portal's account pages share: rendering with the portal's context, the
tenant's models, the quick-start snippets, and the 403 of a role that may not act."""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from hives.selectors import served_models
from tenants.models import Tenant
from web.portal.access import Member

MAX_ID = 2**63 - 1  # the largest primary key: past it, an id is a 404 (not a database error)
KEY_PLACEHOLDER = "$RBEE_API_KEY"


def page(
    request: HttpRequest,
    member: Member | None,
    template: str,
    *,
    section: str,
    title: str,
    status: int = 200,
    **context: Any,
) -> HttpResponse:
    """Render a portal page (`title` is the part before " · rbee portal")."""
    return render(
        request,
        template,
        {
            "face": "portal",
            "section": section,
            "title": f"{title} · rbee portal",
            "member": member,
            **context,
        },
        status=status,
    )


def forbidden(request: HttpRequest, member: Member, message: str) -> HttpResponse:
    """403: a member of this tenant whose role does not allow the action (as the API)."""
    return page(
        request,
        member,
        "web/error.html",
        section="",
        title="Not allowed",
        status=403,
        heading="Not allowed",
        message=message,
    )


def check_id(value: int) -> int:
    if value > MAX_ID:
        raise Http404("no such object")
    return value


def tenant_models(tenant: Tenant) -> list[str]:
    """The models a key of this tenant may be scoped to: its plan's list, else the models
    the fleet serves now."""
    plan = tenant.plan
    allowed = [str(m) for m in (plan.allowed_models or [])] if plan is not None else []
    if allowed:
        return sorted(set(allowed))
    names: set[str] = set()
    for served in served_models():
        names.add(served.model.name)
        names.update(served.aliases)
    return sorted(names)


def base_url(request: HttpRequest) -> str:
    """The queen's own origin + /v1, as the browser reached it."""
    return request.build_absolute_uri("/v1")


def quickstart(*, base: str, key: str | None, model: str | None) -> dict[str, str]:
    """Copy-paste snippets for the OpenAI-compatible API: with the key when it was just
    created (shown once), else a placeholder (stored keys are never shown again)."""
    model = model or "MODEL"
    shown = key or KEY_PLACEHOLDER
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (
        f'curl {base}/chat/completions -H "Authorization: Bearer {shown}" '
        f"-H \"Content-Type: application/json\" -d '{body}'"
    )
    py_key = f'"{key}"' if key else 'os.environ["RBEE_API_KEY"]'
    python = "\n".join(
        [
            *([] if key else ["import os", ""]),
            "from openai import OpenAI",
            "",
            f'client = OpenAI(base_url="{base}", api_key={py_key})',
            "reply = client.chat.completions.create(",
            f'    model="{model}",',
            '    messages=[{"role": "user", "content": "Hello!"}],',
            ")",
            "print(reply.choices[0].message.content)",
        ]
    )
    zed = json.dumps(
        {
            "language_models": {
                "openai_compatible": {
                    "rbee": {
                        "api_url": base,
                        "available_models": [
                            {"name": model, "display_name": f"{model} (rbee)", "max_tokens": 8192}
                        ],
                    }
                }
            }
        },
        indent=2,
    )
    continue_yaml = "\n".join(
        [
            "models:",
            f"  - name: {model} (rbee)",
            "    provider: openai",
            f"    model: {model}",
            f"    apiBase: {base}",
            f"    apiKey: {key if key else '${{ secrets.RBEE_API_KEY }}'}",
        ]
    )
    return {"curl": curl, "python": python, "zed": zed, "continue": continue_yaml}


def sentence(message: str) -> str:
    """A service's message as a sentence for a page ("a tenant must..." -> "A tenant must...")."""
    message = message.strip()
    return (message[:1].upper() + message[1:]).rstrip(".") + "."
