# SPDX-License-Identifier: Apache-2.0
"""The numpy MiniLM forward pass against a PyTorch/transformers reference (tests/data)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from schedcp.repository.embed import DIM, MAX_TOKENS, from_blob, get_embedder, to_blob

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
TEXTS = [s["text"] for s in REFERENCE["sentences"]]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return get_embedder().encode(TEXTS)


def test_full_vectors_match_reference(vectors: np.ndarray) -> None:
    assert REFERENCE["full"], "the fixture must hold full reference vectors"
    for index, blob in REFERENCE["full"].items():
        reference = np.frombuffer(base64.b64decode(blob), dtype="<f4")
        assert reference.shape == (DIM,)
        cosine = float(vectors[int(index)] @ reference / np.linalg.norm(reference))
        assert cosine >= 0.9999, (TEXTS[int(index)], cosine)


def test_leading_dimensions_and_norms_match_for_every_sentence(vectors: np.ndarray) -> None:
    raw = get_embedder().encode(TEXTS, normalize=False)
    for i, sentence in enumerate(REFERENCE["sentences"]):
        np.testing.assert_allclose(vectors[i][:16], sentence["first16"], atol=2e-4, err_msg=sentence["text"])
        assert abs(float(np.linalg.norm(raw[i])) - sentence["pooled_norm"]) < 1e-3 * sentence["pooled_norm"]


def test_pairwise_similarities_match_reference(vectors: np.ndarray) -> None:
    cos = vectors @ vectors.T
    n = len(TEXTS)
    ours = [float(cos[i, j]) for i in range(n) for j in range(i + 1, n)]
    np.testing.assert_allclose(ours, REFERENCE["pairwise_cosine_upper"], atol=1e-3)


def test_unit_length_and_batch_independence() -> None:
    embedder = get_embedder()
    short = "pick an idle cpu"
    alone = embedder.encode([short])[0]
    # Batched with a much longer text, the short one is padded: the mask must hide the padding.
    batched = embedder.encode([short, TEXTS[-1], TEXTS[3]])[0]
    assert abs(float(np.linalg.norm(alone)) - 1.0) < 1e-5
    assert float(alone @ batched) > 0.99999


def test_long_input_is_truncated_not_rejected() -> None:
    embedder = get_embedder()
    encoding = embedder.tokenizer.encode("scheduler " * 2000)
    assert len(encoding.ids) == MAX_TOKENS
    vec = embedder.encode(["scheduler " * 2000, ""])
    assert vec.shape == (2, DIM) and np.isfinite(vec).all()


def test_related_sentences_are_closer_than_unrelated() -> None:
    v = get_embedder().encode(
        [
            "keep the desktop responsive while compiling",
            "interactive tasks should stay snappy during a big build",
            "the quick brown fox jumps over the lazy dog",
        ]
    )
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_model_object_is_cached_per_process() -> None:
    assert get_embedder() is get_embedder()


def test_blob_round_trip() -> None:
    vec = np.linspace(-1, 1, DIM, dtype=np.float32)
    blob = to_blob(vec)
    assert len(blob) == DIM * 4
    np.testing.assert_array_equal(from_blob(blob), vec)
