"""Check response bodies against OpenAI's own schemas (extracted from its OpenAPI description)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

_FILE = Path(__file__).parent / "fixtures" / "openai_schemas.json"


def _nullable(node: Any) -> Any:
    """OpenAI's description still marks some fields OpenAPI-3.0 style (`nullable: true`),
    which JSON Schema ignores: turn those into an explicit null alternative."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _components() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_FILE.read_text())
    components: dict[str, Any] = _nullable(data["components"])
    return components


def assert_openai_shape(schema_name: str, body: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{schema_name}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
    )
