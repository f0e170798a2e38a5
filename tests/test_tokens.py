# SPDX-License-Identifier: Apache-2.0
"""Deployment tokens: real ed25519 keys on disk and a real SQLite nonce store."""

from __future__ import annotations

import base64
import json
import stat
import threading
from pathlib import Path

import pytest

from schedcp.errors import SchedcpError
from schedcp.verifier import keys, tokens
from schedcp.verifier.nonces import NonceStore

OBJ = "a" * 64
RPT = "b" * 64
KERNEL = "7.2.13+deb14-cloud-amd64"
CONFIG = {"slice_us": 5000, "mode": "fair"}
NOW = 1_800_000_000.0


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "verifier_ed25519"


@pytest.fixture
def store(tmp_path: Path):
    with NonceStore(tmp_path / "nonces.sqlite") as s:
        yield s


def _issue(key_path: Path, **overrides) -> str:
    args = {
        "scheduler": "vtime",
        "object_sha256": OBJ,
        "config": CONFIG,
        "report_digest": RPT,
        "kernel": KERNEL,
        "ttl_s": 3600,
        "now": NOW,
    }
    args.update(overrides)
    return tokens.issue_token(keys.load_or_create(key_path), **args)


def _verify(token: str, key_path: Path, store: NonceStore, **overrides):
    args = {
        "object_sha256": OBJ,
        "config": CONFIG,
        "kernel": KERNEL,
        "public_key": keys.load_public(key_path),
        "nonce_store": store,
        "now": NOW + 10,
    }
    args.update(overrides)
    return tokens.verify_token(token, **args)


def test_key_created_private_and_reused(key_path: Path) -> None:
    first = keys.load_or_create(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert keys.public_key_path(key_path).exists()
    second = keys.load_or_create(key_path)
    assert keys.key_id(first.public_key()) == keys.key_id(second.public_key())


def test_world_readable_key_is_refused(key_path: Path) -> None:
    keys.load_or_create(key_path)
    key_path.chmod(0o644)
    with pytest.raises(SchedcpError) as info:
        keys.load_or_create(key_path)
    assert info.value.code == "key_insecure"


def test_sign_and_verify_once(key_path: Path, store: NonceStore) -> None:
    token = _issue(key_path)
    assert len(token) < 700 and "PRIVATE" not in token
    claims = _verify(token, key_path, store)
    assert claims.obj == OBJ and claims.krn == KERNEL and claims.rpt == RPT
    assert claims.exp == int(NOW) + 3600
    assert store.is_spent(claims.nonce)


def test_private_key_material_not_in_token(key_path: Path) -> None:
    token = _issue(key_path)
    pem = key_path.read_text()
    raw = keys.load_or_create(key_path).private_bytes_raw()
    decoded = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert raw not in decoded and base64.b64encode(raw).decode() not in token
    assert pem.splitlines()[1] not in token


def test_replay_is_refused(key_path: Path, store: NonceStore) -> None:
    token = _issue(key_path)
    _verify(token, key_path, store)
    with pytest.raises(tokens.TokenError) as info:
        _verify(token, key_path, store)
    assert info.value.code == "token_replayed"


def test_replay_race_only_one_wins(key_path: Path, tmp_path: Path) -> None:
    token = _issue(key_path)
    results: list[str] = []

    def attempt() -> None:
        with NonceStore(tmp_path / "race.sqlite") as own:
            try:
                _verify(token, key_path, own)
                results.append("ok")
            except tokens.TokenError as exc:
                results.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("token_replayed") == 5


def test_expired_token_is_refused(key_path: Path, store: NonceStore) -> None:
    token = _issue(key_path, ttl_s=60)
    with pytest.raises(tokens.TokenError) as info:
        _verify(token, key_path, store, now=NOW + 60 + tokens.CLOCK_SKEW_S + 1)
    assert info.value.code == "token_expired"
    # A refused token does not burn its nonce.
    assert not store.is_spent(tokens.decode_unverified(token).nonce)


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("object_sha256", "c" * 64, "object"),
        ("config", {"slice_us": 5001, "mode": "fair"}, "configuration"),
        ("kernel", "6.19.14+deb13-cloud-amd64", "kernel"),
    ],
)
def test_binding_mismatch_is_refused(key_path: Path, store: NonceStore, field: str, value, word: str) -> None:
    token = _issue(key_path)
    with pytest.raises(tokens.TokenError) as info:
        _verify(token, key_path, store, **{field: value})
    assert info.value.code == "token_mismatch" and word in info.value.cause


def test_config_order_and_bool_are_canonical() -> None:
    assert tokens.config_digest({"a": 1, "b": "x"}) == tokens.config_digest({"b": "x", "a": 1})
    assert tokens.config_digest({"flag": True}) == tokens.config_digest({"flag": 1})
    assert tokens.config_digest({}) == tokens.config_digest(None)


def test_tampered_claims_are_refused(key_path: Path, store: NonceStore) -> None:
    token = _issue(key_path)
    body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["exp"] += 10**6
    forged = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(tokens.TokenError) as info:
        _verify(forged.rstrip(b"=").decode() + "." + sig, key_path, store)
    assert info.value.code == "token_invalid"


def test_other_key_is_refused(key_path: Path, tmp_path: Path, store: NonceStore) -> None:
    token = _issue(key_path)
    other = keys.load_or_create(tmp_path / "other" / "k").public_key()
    with pytest.raises(tokens.TokenError) as info:
        _verify(token, key_path, store, public_key=other)
    assert info.value.code == "token_invalid"


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "!!!.???", "x" * 5000, "e30.AAAA"])
def test_garbage_is_refused(key_path: Path, store: NonceStore, junk: str) -> None:
    keys.load_or_create(key_path)
    with pytest.raises(tokens.TokenError):
        _verify(junk, key_path, store)


def test_ttl_bounds(key_path: Path) -> None:
    with pytest.raises(SchedcpError):
        _issue(key_path, ttl_s=10)
    with pytest.raises(SchedcpError):
        _issue(key_path, ttl_s=tokens.MAX_TTL_S + 1)
