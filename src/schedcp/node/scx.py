# SPDX-License-Identifier: Apache-2.0
"""Reading sched_ext's state from sysfs and its verdicts from the kernel log."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

SCX_SYSFS = Path("/sys/kernel/sched_ext")

_DISABLED = re.compile(r'sched_ext: BPF scheduler "(?P<name>[^"]*)" disabled \((?P<reason>[^)]*)\)')
_ENABLED = re.compile(r'sched_ext: BPF scheduler "(?P<name>[^"]*)" enabled')
_ERROR_LINE = re.compile(r"sched_ext: (?P<name>[\w.-]+): (?P<detail>.*)")
# Stack frames in the detail ("scx_watchdog_workfn+0x18e/0x240") tell an agent nothing useful.
_FRAME = re.compile(r"^\S+\+0x[0-9a-f]+/0x[0-9a-f]+")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_state() -> dict[str, Any]:
    """A snapshot of /sys/kernel/sched_ext; `supported` is False when the kernel lacks sched_ext."""
    if not SCX_SYSFS.exists():
        return {"supported": False, "state": None, "ops": None}
    out: dict[str, Any] = {
        "supported": True,
        "state": _read(SCX_SYSFS / "state"),
        "ops": _read(SCX_SYSFS / "root" / "ops") or None,
        "enable_seq": _int(_read(SCX_SYSFS / "enable_seq")),
        "nr_rejected": _int(_read(SCX_SYSFS / "nr_rejected")),
        "switch_all": _int(_read(SCX_SYSFS / "switch_all")),
    }
    events = _read(SCX_SYSFS / "root" / "events")
    if events:
        counters: dict[str, int] = {}
        for line in events.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                counters[parts[0]] = int(parts[1])
        out["events"] = counters
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    state = read_state()
    while not predicate(state) and time.monotonic() < deadline:
        time.sleep(interval_s)
        state = read_state()
    return state


class KernelLog:
    """Incremental reader of /dev/kmsg that turns sched_ext lines into structured events."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.path = path
        self._fd: int | None = None
        self._pending: dict[str, Any] | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        return self._fd is not None

    def _records(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        if self._fd is None:
            return out
        while True:
            try:
                raw = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == 32:  # EPIPE: records were overwritten; keep reading from here
                    continue
                break
            if not raw:
                break
            header, _, text = raw.decode(errors="replace").partition(";")
            fields = header.split(",")
            ts = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else 0.0
            out.append((ts, text.split("\n", 1)[0]))
        return out

    def read_events(self) -> list[dict[str, Any]]:
        """sched_ext events since the last call: enabled, disabled (with reason and detail), error."""
        return self.parse(self._records())

    def parse(self, records: list[tuple[float, str]]) -> list[dict[str, Any]]:
        """Turn (timestamp, text) kernel-log records into sched_ext events (stateful across calls)."""
        events: list[dict[str, Any]] = []
        for ts, text in records:
            if "sched_ext" not in text and self._pending is None:
                continue
            m = _DISABLED.search(text)
            if m:
                self._pending = {
                    "ts": ts,
                    "kind": "disabled",
                    "scheduler": m.group("name"),
                    "reason": m.group("reason"),
                    "detail": [],
                    "line": text,
                }
                events.append(self._pending)
                continue
            m = _ENABLED.search(text)
            if m:
                self._pending = None
                events.append({"ts": ts, "kind": "enabled", "scheduler": m.group("name"), "line": text})
                continue
            m = _ERROR_LINE.search(text)
            if m and self._pending is not None and len(self._pending["detail"]) < 8:
                self._pending["detail"].append(m.group("detail"))
                continue
            if "sched_ext" in text:
                self._pending = None
                events.append({"ts": ts, "kind": "message", "line": text})
            elif self._pending is not None and len(self._pending["detail"]) < 8 and not _FRAME.match(text.strip()):
                if text.strip() and not text.startswith(("CPU:", "Hardware name:", "Call Trace", "Workqueue:")):
                    self._pending["detail"].append(text.strip())
            elif self._pending is not None and _FRAME.match(text.strip()):
                continue
            else:
                self._pending = None
        return events
