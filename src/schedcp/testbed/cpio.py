# SPDX-License-Identifier: Apache-2.0
"""A small writer for the "newc" cpio format the kernel unpacks as an initramfs.

Written here (rather than shelling out to cpio) so the guest overlay can be built from in-memory
files and so archives are reproducible: fixed owner, mtime and inode numbering.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass
class Entry:
    name: str  # path inside the archive, without a leading slash
    mode: int  # full st_mode, including the file type bits
    data: bytes = b""


class CpioWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.ino = 1
        self.written = 0

    def _pad(self) -> None:
        pad = (-self.written) % 4
        if pad:
            self.out.write(b"\0" * pad)
            self.written += pad

    def add(self, entry: Entry) -> None:
        name = entry.name.encode() + b"\0"
        fields = [
            self.ino,
            entry.mode,
            0,
            0,
            2 if stat.S_ISDIR(entry.mode) else 1,
            0,
            len(entry.data),
            0,
            0,
            0,
            0,
            len(name),
            0,
        ]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.ino += 1
        self.out.write(header + name)
        self.written += len(header) + len(name)
        self._pad()
        if entry.data:
            self.out.write(entry.data)
            self.written += len(entry.data)
            self._pad()

    def add_tree(self, root: Path, prefix: str = "") -> None:
        """Add a directory tree, depth first, in sorted order; symlinks are kept as links."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                arc = f"{prefix}{rel}"
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.add(Entry(arc, stat.S_IFLNK | 0o777, os.readlink(path).encode()))
                elif stat.S_ISDIR(st.st_mode):
                    self.add(Entry(arc, stat.S_IFDIR | (st.st_mode & 0o7777)))
                elif stat.S_ISREG(st.st_mode):
                    self.add(Entry(arc, stat.S_IFREG | (st.st_mode & 0o7777), path.read_bytes()))

    def close(self) -> None:
        self.add(Entry("TRAILER!!!", 0))
        pad = (-self.written) % 512
        self.out.write(b"\0" * pad)


def write_archive(out: BinaryIO, entries: Iterable[Entry]) -> None:
    writer = CpioWriter(out)
    for entry in entries:
        writer.add(entry)
    writer.close()
