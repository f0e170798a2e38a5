# SPDX-License-Identifier: Apache-2.0
"""Deployment tokens: the verifier's signed statement that one object passed, for one use.

A token is ``base64url(claims JSON) "." base64url(ed25519 signature over those exact bytes)``.
The claims bind the object's SHA-256, a digest of its configuration (the tunable values it was
verified with), the digest of the report that approved it, the target kernel release, the key's
epoch (:data:`schedcp.verifier.keys.KEY_EPOCH`), an expiry and a random nonce. The deploy path calls
:func:`verify_token` with what it is about to load; any difference, a stale token or a second use
is refused with a reason. The private key never leaves :mod:`schedcp.verifier.keys`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp.errors import SchedcpError
from schedcp.verifier.keys import KEY_EPOCH, key_id
from schedcp.verifier.nonces import NonceStore

# 2: tokens carry the key epoch; version-1 tokens predate the key rotation and are refused.
TOKEN_VERSION = 2
DEFAULT_TTL_S = 12 * 3600
MAX_TTL_S = 7 * 24 * 3600
MAX_TOKEN_CHARS = 4096
# Tolerated clock difference between the verifier and the deploying host.
CLOCK_SKEW_S = 120


class TokenError(SchedcpError):
    """A token that must not be honoured; `code` says why (token_invalid, token_mismatch, ...)."""

    def __init__(self, cause: str, code: str, next_step: str = "") -> None:
        super().__init__(cause, next_step or "run `schedcp verify` again for a fresh token", code=code)


class TokenClaims(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int
    kid: str = Field(pattern=r"^[0-9a-f]{16}$")
    ep: int = 0
    sched: str = Field(max_length=128)
    obj: str = Field(pattern=r"^[0-9a-f]{64}$")
    cfg: str = Field(pattern=r"^[0-9a-f]{64}$")
    rpt: str = Field(pattern=r"^[0-9a-f]{64}$")
    krn: str = Field(min_length=1, max_length=128)
    iat: int
    exp: int
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")


def config_digest(config: dict[str, Any] | None) -> str:
    """Canonical digest of validated tunable values (bools count as 0/1)."""
    canon: dict[str, int | str] = {}
    for key, value in (config or {}).items():
        canon[str(key)] = int(value) if isinstance(value, bool) else value
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    private_key: Ed25519PrivateKey,
    *,
    scheduler: str,
    object_sha256: str,
    config: dict[str, Any] | None,
    report_digest: str,
    kernel: str,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    if not 60 <= ttl_s <= MAX_TTL_S:
        raise SchedcpError(f"token lifetime {ttl_s}s is out of range", f"use 60..{MAX_TTL_S} seconds", code="usage")
    issued = int(time.time() if now is None else now)
    claims = TokenClaims(
        v=TOKEN_VERSION,
        kid=key_id(private_key.public_key()),
        ep=KEY_EPOCH,
        sched=scheduler[:128],
        obj=object_sha256,
        cfg=config_digest(config),
        rpt=report_digest,
        krn=kernel,
        iat=issued,
        exp=issued + ttl_s,
        nonce=_b64(secrets.token_bytes(18)),
    )
    body = json.dumps(claims.model_dump(), sort_keys=True, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(private_key.sign(body))}"


def decode_unverified(token: str) -> TokenClaims:
    """Parse the claims without checking anything (for display only)."""
    body, _ = _split(token)
    return _parse_claims(body)


def _split(token: str) -> tuple[bytes, bytes]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise TokenError("the deployment token is malformed", "token_invalid")
    body_text, sig_text = token.strip().split(".")
    try:
        return _unb64(body_text), _unb64(sig_text)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("the deployment token is not valid base64url", "token_invalid") from exc


def _parse_claims(body: bytes) -> TokenClaims:
    try:
        return TokenClaims.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        raise TokenError("the deployment token's claims are unreadable", "token_invalid") from exc


def verify_token(
    token: str,
    *,
    object_sha256: str,
    config: dict[str, Any] | None,
    kernel: str,
    public_key: Ed25519PublicKey,
    nonce_store: NonceStore,
    now: float | None = None,
) -> TokenClaims:
    """Check signature, binding, expiry and single use; on success the token is spent."""
    body, signature = _split(token)
    try:
        public_key.verify(signature, body)
    except InvalidSignature as exc:
        raise TokenError(
            "the deployment token's signature does not verify (forged, altered or another key)", "token_invalid"
        ) from exc
    claims = _parse_claims(body)
    if claims.v != TOKEN_VERSION:
        raise TokenError(f"unsupported token version {claims.v} (issued by an older SchedCP)", "token_invalid")
    if claims.ep != KEY_EPOCH:
        raise TokenError(f"the token was signed by a retired key (epoch {claims.ep}, now {KEY_EPOCH})", "token_invalid")
    if claims.kid != key_id(public_key):
        raise TokenError("the token names a different verifier key", "token_invalid")
    mismatches = []
    if claims.obj != object_sha256:
        mismatches.append("object (the BPF object differs from the one verified)")
    if claims.cfg != config_digest(config):
        mismatches.append("configuration (tunable values differ from the verified ones)")
    if claims.krn != kernel:
        mismatches.append(f"kernel (verified for {claims.krn}, deploying to {kernel})")
    if mismatches:
        raise TokenError(
            "the token does not cover this deployment: " + "; ".join(mismatches),
            "token_mismatch",
            "verify this exact object, configuration and kernel",
        )
    current = time.time() if now is None else now
    if current > claims.exp + CLOCK_SKEW_S:
        raise TokenError(f"the token expired {int(current - claims.exp)}s ago", "token_expired")
    if claims.iat > current + CLOCK_SKEW_S:
        raise TokenError("the token was issued in the future (clock skew or forgery)", "token_invalid")
    if not nonce_store.consume(claims.nonce, key_id=claims.kid, expires_at=claims.exp, now=current):
        raise TokenError("the token was already used once", "token_replayed")
    return claims
