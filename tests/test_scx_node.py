# SPDX-License-Identifier: Apache-2.0
"""Node-side pieces of the scx loader that need no VM: whose enum values are trusted, and replies
that must reach the control plane whole."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from schedcp.node import agent, scxload
from schedcp.testbed import kernel as kernel_mod


@pytest.fixture()
def kernel_btf(tmp_path: Path, monkeypatch) -> bytes:
    """The test kernel's BTF standing in for /sys/kernel/btf/vmlinux."""
    kernel = kernel_mod.cached("unstable")
    with kernel.vmlinux.open("rb") as fh:
        raw = ELFFile(fh).get_section_by_name(".BTF").data()
    path = tmp_path / "vmlinux"
    path.write_bytes(raw)
    monkeypatch.setattr(scxload, "KERNEL_BTF", path)
    monkeypatch.setattr(scxload, "_enums", None)
    return raw


def test_enum_values_from_the_control_plane_are_used_only_for_the_same_btf(kernel_btf: bytes) -> None:
    forged = {"btf_sha256": "0" * 64, "values": {"SCX_DSQ_GLOBAL": 7}}
    assert scxload.kernel_enums(forged).values["SCX_DSQ_GLOBAL"] == (1 << 63) | 1  # read its own BTF
    scxload._enums = None
    sent = {"btf_sha256": hashlib.sha256(kernel_btf).hexdigest(), "values": {"SCX_DSQ_GLOBAL": 123}}
    assert scxload.kernel_enums(sent).values == {"SCX_DSQ_GLOBAL": 123}


class _Trickle(io.RawIOBase):
    """A raw, unbuffered port that takes at most 4 KB per write (as a virtio port may)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        chunk = bytes(b[:4096])
        self.data += chunk
        return len(chunk)


def test_large_replies_are_written_whole() -> None:
    port = _Trickle()
    reply = b'{"log":"' + b"x" * 100_000 + b'"}\n'
    agent._write_all(port, reply)  # type: ignore[arg-type]
    assert bytes(port.data) == reply
