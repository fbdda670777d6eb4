"""Stored Responses API responses in the database (inference/services.py, retention.py):
a continued conversation stays its end user's, for their export and their erasure."""

from __future__ import annotations

import pytest

from gdpr import subjects
from inference import retention, services
from inference.models import StoredResponse

pytestmark = pytest.mark.django_db


def _store(rid: str, *, end_user: str, previous: str | None = None, tenant_id: int = 1) -> None:
    services.stored_response_create(
        tenant_id=tenant_id,
        tenant=f"t{tenant_id}",
        response_id=rid,
        end_user=end_user,
        basis="contract",
        model="talker",
        history=[{"type": "message", "role": "user", "content": "carol's words"}]
        if previous
        else [],
        input_items=[{"type": "message", "role": "user", "content": f"{rid} words"}],
        body={"id": rid, "previous_response_id": previous, "output": []},
        days=30,
    )


def test_a_continued_conversation_is_exported_and_erased_with_its_end_user() -> None:
    carol = subjects.end_user("t1", "carol")
    _store("resp_a", end_user="carol")
    _store("resp_b", end_user="", previous="resp_a")  # a later turn naming no user
    _store("resp_c", end_user="dave", previous="resp_b")  # carries carol's history too
    _store("resp_d", end_user="dave")  # dave's own conversation
    _store("resp_e", end_user="", tenant_id=2)  # another tenant's, naming no user

    exported = [r["response_id"] for r in retention.response_export(carol)]
    assert exported == ["resp_a", "resp_b"]

    erased = retention.response_erase(carol)
    assert erased.deleted == 3
    left = sorted(StoredResponse.objects.values_list("response_id", flat=True))
    assert left == ["resp_d", "resp_e"]
    assert retention.response_erase(carol).deleted == 0  # idempotent
