"""What the law says a subject and a supervisory authority must be told, generated from
the registered providers (so a new app's store appears without editing gdpr):

* Art. 15(1) and (2): purposes, categories, recipients, retention, the rights to
  rectification, erasure, restriction and objection, the right to complain, the source,
  automated decisions, transfers to third countries: `art15()`, in every export archive.
* Art. 30(1): the record of processing activities: `art30()` and `art30_markdown()`
  (GET /gdpr/processing, `rbee gdpr processing`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from gdpr import providers

RIGHTS = (
    "access and a copy of your data (Art. 15, 20): /gdpr/export",
    "rectification (Art. 16): your account page, or ask the controller",
    "erasure (Art. 17): /gdpr/delete",
    "restriction of processing (Art. 18) and objection (Art. 21): ask the controller",
    "withdraw a consent at any time, as easily as it was given (Art. 7(3))",
)
COMPLAINT = (
    "You may lodge a complaint with a supervisory authority (Art. 77 GDPR), in particular in "
    "the member state of your habitual residence, place of work or of the alleged "
    "infringement; the list of EU authorities: https://edpb.europa.eu/about-edpb/board/members_en"
)
SOURCES = {
    "user": "you, when you signed up or were invited, and the services you used",
    "enduser": "the tenant (the company whose application you use) sent your user id with "
    "its requests to this service; rbee never receives your name or e-mail from them",
}


def controller() -> dict[str, str]:
    return {
        "name": getattr(settings, "RBEE_CONTROLLER_NAME", "") or "the operator of this rbee",
        "contact": getattr(settings, "RBEE_CONTROLLER_CONTACT", "") or "",
        "dpo": getattr(settings, "RBEE_DPO_CONTACT", "") or "",
    }


def _store(p: providers.Provider) -> dict[str, Any]:
    return {
        "store": p.name,
        "title": p.title,
        "categories": list(p.categories),
        "purposes": list(p.purposes),
        "recipients": list(p.recipients) or ["none outside the operator"],
        "retention": p.retention,
        "regions": list(p.regions) or ["where this rbee deployment runs"],
        "transfers": list(p.transfers) or ["none"],
    }


def art15() -> dict[str, Any]:
    return {
        "controller": controller(),
        "stores": [_store(p) for p in providers.registered()],
        "your_rights": list(RIGHTS),
        "complaint": COMPLAINT,
        "source": SOURCES,
        "automated_decisions": "none with legal or similarly significant effects (Art. 22); "
        "rate limits and quotas are applied automatically per tenant, not per person",
    }


def readme() -> str:
    return (
        "Your personal data held by this rbee deployment.\n\n"
        "data/<store>.json  every record of one store, as JSON (schema/ says its shape)\n"
        "data/<store>.csv   the same records as CSV\n"
        "information.json   purposes, recipients, retention, regions, your rights (Art. 15)\n"
        "manifest.json      the SHA-256 of every file, signed with the deployment's Ed25519\n"
        "                   key (verify against the public key the operator publishes)\n"
    )


def art30() -> dict[str, Any]:
    """The record of processing activities (Art. 30(1)), one activity per store."""
    return {
        "controller": controller(),
        "activities": [
            {
                "name": p.title,
                "store": p.name,
                "purposes": list(p.purposes),
                "categories_of_data": list(p.categories),
                "categories_of_subjects": list(p.data_subjects),
                "recipients": list(p.recipients) or ["none outside the operator"],
                "transfers": list(p.transfers) or ["none"],
                "retention": p.retention,
                "regions": list(p.regions) or ["where this rbee deployment runs"],
                "security": "access by role and operators' permission area; secrets hashed; "
                "audit events sealed per subject (AES-256-GCM) in an append-only, "
                "Merkle-hashed log with signed checkpoints",
            }
            for p in providers.registered()
        ],
    }


def art30_markdown() -> str:
    doc = art30()
    c = doc["controller"]
    lines = [
        "# Record of processing activities (Art. 30 GDPR)",
        "",
        f"Controller: {c['name']}" + (f", {c['contact']}" if c["contact"] else ""),
    ]
    if c["dpo"]:
        lines.append(f"Data protection officer: {c['dpo']}")
    for a in doc["activities"]:
        lines += [
            "",
            f"## {a['name']} (`{a['store']}`)",
            "",
            f"- Purposes: {'; '.join(a['purposes'])}",
            f"- Categories of personal data: {'; '.join(a['categories_of_data'])}",
            f"- Categories of data subjects: {'; '.join(a['categories_of_subjects'])}",
            f"- Recipients: {'; '.join(a['recipients'])}",
            f"- Transfers to third countries: {'; '.join(a['transfers'])}",
            f"- Retention: {a['retention']}",
            f"- Where: {'; '.join(a['regions'])}",
            f"- Security measures: {a['security']}",
        ]
    return "\n".join(lines) + "\n"
