# SPDX-License-Identifier: Apache-2.0
"""The verifier's ed25519 signing key: created on first use, kept private, never exported.

Custody: the private key lives with the code that signs (the daemon's state directory,
``<data_dir>/keys/verifier_ed25519``, or ``SCHEDCP_VERIFIER_KEY``) as unencrypted PKCS#8 PEM, mode
0600, owned by the signing user, in a 0700 directory of that user. It is never bound into a
sandbox (the compiler sees only its own files, headers and the staged source). A key file or key
directory that another user could read, or that another user owns, is refused rather than used.
The public key is written beside it (``.pub``) so the deploy path checks tokens without the
private key.

Rotation: :data:`KEY_EPOCH` names the current generation of keys. A key from an older epoch (or
one with no epoch record, from before epochs existed) is replaced by a fresh key the first time
the new code loads it, for signing or for checking, so every token signed before an upgrade that
bumps the epoch is refused: its key id no longer matches and its signature does not verify.
Bump the epoch whenever a key may have been exposed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schedcp.errors import SchedcpError
from schedcp.paths import data_dir

KEY_ENV = "SCHEDCP_VERIFIER_KEY"
# Epoch 2: keys created before the compiler sandbox (a smuggled #include could read them) are retired.
KEY_EPOCH = 2


def default_key_path() -> Path:
    explicit = os.environ.get(KEY_ENV)
    return Path(explicit) if explicit else data_dir() / "keys" / "verifier_ed25519"


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint that names the key in tokens (not a secret)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def epoch_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".epoch")


def key_epoch(private_path: Path) -> int:
    """The epoch recorded for the key at `private_path` (0: none recorded, a pre-epoch key)."""
    try:
        return int(json.loads(epoch_path(private_path).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _insecure(path: Path, why: str, fix: str) -> SchedcpError:
    return SchedcpError(f"the verifier key {path} {why}", fix, code="key_insecure")


def _check_owner(path: Path) -> os.stat_result:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise _insecure(path, "is not a regular file (a link?)", "delete it to generate a new key")
    if st.st_uid != os.geteuid():
        raise _insecure(path, f"belongs to uid {st.st_uid}, not to the signing user", "delete it to generate a new key")
    return st


def _check_private_perms(path: Path) -> None:
    st = _check_owner(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _insecure(
            path,
            f"is accessible by other users (mode {stat.S_IMODE(st.st_mode):o})",
            f"chmod 600 {path}, or delete it to generate a new key",
        )
    _check_key_dir(path.parent)


def _check_key_dir(directory: Path) -> None:
    st = directory.stat()
    if st.st_uid != os.geteuid():
        raise _insecure(directory, f"directory belongs to uid {st.st_uid}", "keep the key in a directory of its own")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        directory.chmod(0o700)  # ours: tighten it rather than refuse


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time creates or rotates the key in this directory."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_key_dir(directory)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load_private(path: Path) -> Ed25519PrivateKey:
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
    return key


def _create(path: Path) -> Ed25519PrivateKey:
    """A new key replacing whatever is at `path` (atomically), recorded with the current epoch."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _write_public(path, key.public_key())
    record = {"epoch": KEY_EPOCH, "kid": key_id(key.public_key()), "created": int(time.time())}
    ep_tmp = epoch_path(path).with_name(f".{path.name}.epoch.{os.getpid()}.new")
    ep_tmp.write_text(json.dumps(record))
    ep_tmp.chmod(0o644)
    ep_tmp.replace(epoch_path(path))
    return key


def load_or_create(path: Path | None = None) -> Ed25519PrivateKey:
    """The signing key at `path`: generated when there is none, rotated when it is from an older epoch."""
    path = path or default_key_path()
    if path.exists() and key_epoch(path) == KEY_EPOCH:
        key = _load_private(path)
        _write_public(path, key.public_key())
        return key
    with _locked(path.parent):
        if path.exists():
            if key_epoch(path) == KEY_EPOCH:  # another process rotated it meanwhile
                return _load_private(path)
            _check_owner(path)  # an old key is replaced whatever its mode, but never one planted by another user
        return _create(path)


def _write_public(private_path: Path, public_key: Ed25519PublicKey) -> None:
    pub_path = public_key_path(private_path)
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub_path.exists() or pub_path.read_bytes() != pem:
        tmp = pub_path.with_name(f".{pub_path.name}.{os.getpid()}.new")
        tmp.write_bytes(pem)
        tmp.chmod(0o644)
        tmp.replace(pub_path)


def load_public(path: Path | None = None) -> Ed25519PublicKey:
    """The verifier's current public key (from the .pub file, or derived from the private key).

    A key of an older epoch is rotated first (when this user may, i.e. is the signing user), so
    tokens signed before the rotation never verify against it.
    """
    path = path or default_key_path()
    if path.exists() and key_epoch(path) != KEY_EPOCH:
        if os.access(path.parent, os.W_OK):
            return load_or_create(path).public_key()
        raise SchedcpError(
            f"the verifier key {path} is from an older key epoch and has not been rotated yet",
            "restart the SchedCP daemon (it rotates the key), then verify again",
            code="key_stale",
        )
    pub_path = public_key_path(path)
    if pub_path.exists():
        key = serialization.load_pem_public_key(pub_path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            return key
    if path.exists():
        return load_or_create(path).public_key()
    raise SchedcpError(f"no verifier key at {path}", "run `schedcp verify` once to create it", code="key_missing")
