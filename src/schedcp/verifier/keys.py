# SPDX-License-Identifier: Apache-2.0
"""The verifier's ed25519 signing key: created on first use, kept private, never exported.

The private key lives with the daemon (default ``<data_dir>/keys/verifier_ed25519``, or
``SCHEDCP_VERIFIER_KEY``) as unencrypted PKCS#8 PEM with mode 0600 in a 0700 directory; the public
key is written beside it (``.pub``) so the deploy path can check tokens without the private key.
A key file readable by group or others is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schedcp.errors import SchedcpError
from schedcp.paths import data_dir

KEY_ENV = "SCHEDCP_VERIFIER_KEY"


def default_key_path() -> Path:
    explicit = os.environ.get(KEY_ENV)
    return Path(explicit) if explicit else data_dir() / "keys" / "verifier_ed25519"


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint that names the key in tokens (not a secret)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _check_private_perms(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SchedcpError(
            f"the verifier key {path} is accessible by other users (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {path}, or delete it to generate a new key",
            code="key_insecure",
        )


def load_or_create(path: Path | None = None) -> Ed25519PrivateKey:
    """The signing key at `path`, generating and storing a new one when there is none."""
    path = path or default_key_path()
    if path.exists():
        _check_private_perms(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise SchedcpError(
                f"cannot read the verifier key {path}: {exc}",
                "restore the key file or delete it to generate a new one",
                code="key_invalid",
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SchedcpError(f"{path} is not an ed25519 key", "delete it to generate a new one", code="key_invalid")
        _write_public(path, key.public_key())
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL: if another process created the key meanwhile, use theirs instead of overwriting it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    _write_public(path, key.public_key())
    return key


def _write_public(private_path: Path, public_key: Ed25519PublicKey) -> None:
    pub_path = public_key_path(private_path)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub_path.exists() or pub_path.read_bytes() != pem:
        tmp = pub_path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o644)
        tmp.replace(pub_path)


def load_public(path: Path | None = None) -> Ed25519PublicKey:
    """The verifier's public key (from the .pub file, or derived from the private key)."""
    path = path or default_key_path()
    pub_path = public_key_path(path)
    if pub_path.exists():
        key = serialization.load_pem_public_key(pub_path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            return key
    if path.exists():
        return load_or_create(path).public_key()
    raise SchedcpError(f"no verifier key at {path}", "run `schedcp verify` once to create it", code="key_missing")
