"""How a model writes tool calls, per family, for the engines that render chat templates
themselves (llama.cpp, transformers): which family a chat template belongs to, how the
conversation is rendered for it, a GBNF grammar that makes every call valid against its
function's JSON Schema, and a parser that reads calls out of the text as it grows (so
they stream as OpenAI's pieces).

Families (as llama-server tells them apart by their templates):

    generic       a template with no tool support (SmolLM2, ...): our own system prompt
                  lists the tools; calls are written Hermes-style (below)
    hermes        Hermes 2/3, Qwen 2.5/3:
                  <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
    llama3        Llama 3.1-3.3: {"name": ..., "parameters": {...}}
    mistral       Mistral/Mixtral (v3 tokenizer): [TOOL_CALLS][{"name": ..., "arguments": {...}}]
    functionary31 Functionary v3.1 (Llama 3.1 based): <function=NAME>{...}</function>
    functionary32 Functionary v3.2: >>>NAME\\n{...} (>>>all\\n before plain text)

The calls are always sampled under the family's grammar: with tool_choice "required" or
a named function from the first token; with "auto" the model writes freely until the
family's trigger appears, then generation restarts at that point under the grammar
(llama-server's "lazy grammar"), so `auto` still lets the model answer in text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hives.agent.engines.base import EngineError
from hives.agent.engines.tools import ToolRequest, call_pieces
from kernel.schemarefs import outside_ref

_NAME = r"([A-Za-z0-9_-]{1,64})"


@dataclass(frozen=True)
class Family:
    name: str
    trigger: str  # the text that opens the calls
    head: re.Pattern[str]  # one call's head: group 1 is the name, the arguments follow
    native: bool  # the template renders `tools` itself
    parallel: bool = True  # the format can hold several calls
    text_prefix: str = ""  # written before plain text (functionary v3.2), not content

    def grammar(self, functions: list[dict[str, Any]], parallel: bool) -> str:
        """GBNF for the calls, from the trigger on."""
        rules: list[str] = []
        alts: list[str] = []
        for i, fn in enumerate(functions):
            prefix = f"f{i}"
            root, body = schema_rules(fn.get("parameters") or {"type": "object"}, prefix)
            rules.append(body)
            name = str(fn["name"])
            if self.name in ("generic", "hermes", "mistral", "llama3"):
                key = "parameters" if self.name == "llama3" else "arguments"
                head = _lit(f'{{"name": "{name}", "{key}": ')
                alts.append(f'{head} {root} "}}"')
            elif self.name == "functionary31":
                alts.append(f"{_lit(f'<function={name}>')} {root} {_lit('</function>')}")
            else:  # functionary32
                alts.append(f"{_lit(f'>>>{name}' + chr(10))} {root}")
        rules.append("call ::= " + " | ".join(f"( {a} )" for a in alts))
        many = parallel and self.parallel
        more = f"{{0,{max(0, len(functions) - 1)}}}" if many else "{0,0}"
        if self.name in ("generic", "hermes"):
            one = f"{_lit('<tool_call>' + chr(10))} call {_lit(chr(10) + '</tool_call>')}"
            root_rule = f"root ::= {one} ( {_lit(chr(10))} {one} ){more}"
        elif self.name == "mistral":
            root_rule = f'root ::= {_lit("[TOOL_CALLS][")} call ( {_lit(", ")} call ){more} "]"'
        elif self.name == "llama3":
            root_rule = "root ::= call"
        else:
            root_rule = f"root ::= call ( call ){more}"
        return "\n".join([root_rule, *rules])

    def forced_prefix(self, named: str | None) -> str:
        """The text a forced call starts with, for an engine with no grammar sampler: the
        family's opening and, for a named function, up to its arguments."""
        if self.name in ("generic", "hermes", "llama3", "mistral"):
            opening = {
                "generic": "<tool_call>\n",
                "hermes": "<tool_call>\n",
                "mistral": "[TOOL_CALLS][",
            }
            key = "parameters" if self.name == "llama3" else "arguments"
            head = f'{{"name": "{named}", "{key}": ' if named else '{"name": "'
            return opening.get(self.name, "") + head
        if self.name == "functionary31":
            return f"<function={named}>" if named else "<function="
        return f">>>{named}\n" if named else ">>>"


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "generic",
            "<tool_call>",
            re.compile(r'\{\s*"name"\s*:\s*"' + _NAME + r'"\s*,\s*"arguments"\s*:'),
            native=False,
        ),
        Family(
            "hermes",
            "<tool_call>",
            re.compile(r'\{\s*"name"\s*:\s*"' + _NAME + r'"\s*,\s*"arguments"\s*:'),
            native=True,
        ),
        Family(
            "llama3",
            '{"name"',
            re.compile(r'\{\s*"name"\s*:\s*"' + _NAME + r'"\s*,\s*"parameters"\s*:'),
            native=True,
            parallel=False,
        ),
        Family(
            "mistral",
            "[TOOL_CALLS]",
            re.compile(r'\{\s*"name"\s*:\s*"' + _NAME + r'"\s*,\s*"arguments"\s*:'),
            native=True,
        ),
        Family("functionary31", "<function=", re.compile(r"<function=" + _NAME + ">"), native=True),
        Family(
            "functionary32",
            ">>>",
            re.compile(r">>>(?!all\n)" + _NAME + r"\n"),
            native=True,
            text_prefix=">>>all\n",
        ),
    )
}


def detect(template: str | None) -> Family:
    """The tool-call family a chat template belongs to (generic when it has none)."""
    t = template or ""
    if "tools" not in t and "<tool_call>" not in t:
        return FAMILIES["generic"]
    if "<tool_call>" in t:
        return FAMILIES["hermes"]
    if "[TOOL_CALLS]" in t:
        return FAMILIES["mistral"]
    if "<function=" in t:
        return FAMILIES["functionary31"]
    if ">>>" in t and "all" in t:
        return FAMILIES["functionary32"]
    if "<|python_tag|>" in t or ("ipython" in t and "<|start_header_id|>" in t):
        return FAMILIES["llama3"]
    return FAMILIES["generic"]  # it renders tools, in a format we cannot parse


# --- grammar ---------------------------------------------------------------------------

_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[A-Za-z][A-Za-z0-9-]*')


def schema_rules(schema: dict[str, Any], prefix: str) -> tuple[str, str]:
    """A JSON Schema as GBNF rules named `prefix-...` (llama.cpp's converter, which ships
    with llama-cpp-python): (the root rule's name, the rules)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    ref = outside_ref(schema)
    if ref is not None:  # the converter would GET it
        raise EngineError(
            f"This function's parameters refer outside themselves ({ref!r}); only "
            "references inside the schema are supported.",
            status=400,
            code="unsupported_schema",
            param="tools",
        )
    try:
        gbnf = json_schema_to_gbnf(json.dumps(expressible(schema)))
    except Exception as exc:  # a schema the converter cannot express
        raise EngineError(
            f"This function's parameters cannot be enforced: {exc}",
            status=400,
            code="unsupported_schema",
            param="tools",
        ) from exc
    lines = [ln for ln in gbnf.splitlines() if "::=" in ln]
    names = {ln.split("::=", 1)[0].strip() for ln in lines}

    def rename(m: re.Match[str]) -> str:
        tok = m.group(0)
        return f"{prefix}-{tok}" if tok in names else tok

    out = []
    for ln in lines:
        name, body = ln.split("::=", 1)
        out.append(f"{prefix}-{name.strip()} ::= {_GBNF_TOKEN.sub(rename, body)}")
    return f"{prefix}-root", "\n".join(out)


MAX_ENUMERATED = 256  # an integer range this small becomes an enum the grammar can hold


def expressible(schema: Any) -> Any:
    """The schema with the constraints llama.cpp's converter ignores rewritten into ones it
    keeps, where that is exact: a bounded integer range of at most MAX_ENUMERATED values
    becomes an enum. What stays inexpressible (wide or one-sided numeric bounds) is
    checked when the call is complete (`invalid_arguments`)."""
    if isinstance(schema, list):
        return [expressible(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: expressible(v) for k, v in schema.items()}
    if out.get("type") == "integer" and "enum" not in out and "const" not in out:
        low, high = _int_bounds(out)
        if low is not None and high is not None and 0 <= high - low < MAX_ENUMERATED:
            return {"enum": list(range(low, high + 1))}
    return out


def _int_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    import math

    low: int | None = None
    high: int | None = None
    if isinstance(schema.get("minimum"), int | float):
        low = math.ceil(schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = max(low if low is not None else -(2**63), math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        high = math.floor(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = min(high if high is not None else 2**63, math.ceil(schema["exclusiveMaximum"]) - 1)
    return low, high


def invalid_arguments(functions: list[dict[str, Any]], name: str, arguments: str) -> str | None:
    """Why a finished call does not fit its function (None: it does)."""
    from jsonschema import exceptions, validators
    from referencing import Registry

    fn = next((f for f in functions if f.get("name") == name), None)
    if fn is None:
        return f"the model called {name!r}, which is not one of the tools"
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        return f"the arguments of {name!r} are not JSON: {exc}"
    schema = fn.get("parameters") or {"type": "object"}
    ref = outside_ref(schema)
    if ref is not None:  # jsonschema would open it (any URL, file: included)
        return f"the parameters of {name!r} refer outside themselves ({ref!r})"
    # An empty registry: a reference is resolved inside the schema or not at all.
    validator = validators.validator_for(schema)(schema, registry=Registry())
    error = exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        return f"the arguments of {name!r} do not match its parameters: {error.message}"
    return None


# --- rendering -------------------------------------------------------------------------

GENERIC_PROMPT = (
    "You can call functions. These are the functions, as JSON Schemas:\n{tools}\n"
    "To call a function, answer with only\n<tool_call>\n"
    '{{"name": "<function name>", "arguments": <arguments as a JSON object>}}\n'
    "</tool_call>\n(one block per call). Otherwise answer the user directly."
)


def render_messages(
    family: Family, messages: list[dict[str, Any]], tools: ToolRequest
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The conversation as the template should see it, and the `tools` to hand it (None:
    the template is not told). A native template gets the history with each call's
    arguments as an object (as Hugging Face templates expect); the generic one gets the
    calls written out in its own format, tool results as user turns and the tools in the
    system prompt."""
    if family.native:
        out = []
        ids = _mistral_ids(messages) if family.name == "mistral" else {}
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    {
                        "id": ids.get(c["id"], c["id"]),
                        "type": "function",
                        "function": {
                            "name": c["function"]["name"],
                            "arguments": _as_object(c["function"]["arguments"]),
                        },
                    }
                    for c in m["tool_calls"]
                ]
            if m.get("tool_call_id") in ids:
                m["tool_call_id"] = ids[m["tool_call_id"]]
            if m.get("content") is None:
                m["content"] = ""
            out.append(m)
        return out, [{"type": "function", "function": f} for f in tools.tools]
    return _generic_messages(messages, tools), None


def _as_object(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


def _mistral_ids(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Mistral's templates accept only 9-character alphanumeric call ids."""
    ids: dict[str, str] = {}
    for m in messages:
        for c in m.get("tool_calls") or []:
            cid = str(c["id"])
            if not (len(cid) == 9 and cid.isalnum()):
                ids[cid] = hashlib.sha256(cid.encode()).hexdigest()[:9]
    return ids


def _generic_messages(messages: list[dict[str, Any]], tools: ToolRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if tools.active:
        listing = "\n".join(json.dumps(f, ensure_ascii=False) for f in tools.tools)
        prompt = GENERIC_PROMPT.format(tools=listing)
        if messages and messages[0].get("role") in ("system", "developer"):
            first = messages[0]
            out.append(
                {"role": first["role"], "content": f"{first.get('content') or ''}\n\n{prompt}"}
            )
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": prompt})
    names: dict[str, str] = {}
    for m in messages:
        role = m.get("role")
        content = str(m.get("content") or "")
        if role == "assistant" and m.get("tool_calls"):
            blocks = []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                call = {
                    "name": c["function"]["name"],
                    "arguments": _as_object(c["function"]["arguments"]),
                }
                blocks.append(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>")
            content = "\n".join(([content] if content else []) + blocks)
            out.append({"role": "assistant", "content": content})
        elif role == "tool":
            name = m.get("name") or names.get(str(m.get("tool_call_id")), "")
            text = f'<tool_response name="{name}">\n{content}\n</tool_response>'
            if out and out[-1]["role"] == "user":  # several results: one user turn
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + text}
            else:
                out.append({"role": "user", "content": text})
        else:
            out.append({"role": role, "content": content})
    return out


# --- reading calls out of text ---------------------------------------------------------


def json_end(text: str, start: int) -> int | None:
    """The end of the JSON object that starts at text[start] ('{'), or None while it is
    still open."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def scan_calls(family: Family, text: str) -> list[tuple[str, str, bool]]:
    """The calls in `text` (from the trigger on) so far: (name, arguments text, complete).
    As `text` grows, each call's arguments only grow: what streams never changes."""
    calls: list[tuple[str, str, bool]] = []
    pos = 0
    while True:
        m = family.head.search(text, pos)
        if m is None:
            return calls
        start = m.end()
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        if start >= len(text):
            calls.append((m.group(1), "", False))
            return calls
        if text[start] != "{":  # not an object: not a call this parser reads
            return calls
        end = json_end(text, start)
        if end is None:
            calls.append((m.group(1), text[start:], False))
            return calls
        calls.append((m.group(1), text[start:end], True))
        pos = end


class CallStream:
    """Turns the growing text of calls into OpenAI's streaming pieces, once each."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.sent: list[int] = []  # per call: characters of arguments already sent

    def feed(self, text: str) -> list[dict[str, Any]]:
        pieces: list[dict[str, Any]] = []
        for index, (name, arguments, _done) in enumerate(scan_calls(self.family, text)):
            if index == len(self.sent):
                head = next(call_pieces(index, name, ""))
                pieces.append(head)
                self.sent.append(0)
            new = arguments[self.sent[index] :]
            if new:
                pieces.append({"index": index, "function": {"arguments": new}})
                self.sent[index] = len(arguments)
        return pieces

    @property
    def count(self) -> int:
        return len(self.sent)


def trigger_at(family: Family, text: str) -> int:
    """Where the family's calls start in `text` (-1: not yet); a functionary v3.2 text
    prefix is not a call."""
    body = text
    if family.text_prefix and text.startswith(family.text_prefix):
        i = text.find(family.trigger, len(family.text_prefix))
        return i
    return body.find(family.trigger)


def held_back(text: str, needles: list[str]) -> int:
    """How many characters at the end of `text` could still grow into one of `needles`
    (a stop sequence, a trigger): text that must not be streamed yet."""
    best = 0
    for s in needles:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


def iter_calls(family: Family, text: str) -> Iterator[tuple[str, str]]:
    """Whole calls in finished text: (name, arguments)."""
    for name, arguments, done in scan_calls(family, text):
        if done:
            yield name, arguments
