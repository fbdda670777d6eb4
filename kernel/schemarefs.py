"""References in a JSON Schema that a client sent (tool parameters, response_format).

llama.cpp's schema converter GETs an `https:` `$ref` (with no timeout) and jsonschema
opens any URL it cannot resolve (`file:` included): a tenant's schema must never make the
queen or a hive reach a network or a disk. Only references inside the schema itself
(`#`, `#/$defs/...`) are followed; `outside_ref` finds the first other one.
"""

from __future__ import annotations

from typing import Any

REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def outside_ref(schema: Any) -> str | None:
    """The first reference in `schema` that does not point inside it (None: there is
    none). Iterative, so a deeply nested schema cannot exhaust the stack."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in REF_KEYS:
                ref = node.get(key)
                if key in node and not (isinstance(ref, str) and ref.startswith("#")):
                    return str(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None
