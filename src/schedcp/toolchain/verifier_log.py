# SPDX-License-Identifier: Apache-2.0
"""Reading the kernel verifier's log the way an agent needs it: the complaint and the source line."""

from __future__ import annotations

import re

# libbpf lines that state why an object failed before any program was verified.
_LIBBPF_FAILURE = re.compile(
    r"not found in kernel|failed to (?:create|find|resolve|relocate)|unsupported|\berror\b|invalid", re.I
)


def summarize(log: list[str]) -> str:
    """The failing source line and the verifier's complaint, from a libbpf/verifier log.

    The verifier annotates instructions with "; <code> @ file.bpf.c:LINE"; the complaint is the last
    non-instruction line before "processed N insns" / "-- END PROG LOAD LOG --".
    """
    source_line = ""
    for i, line in enumerate(log):
        if line.startswith("; ") and " @ " in line:
            source_line = line[2:].strip()
        if "-- END PROG LOAD LOG --" in line or line.startswith("processed "):
            complaint = next((log[j] for j in range(i - 1, -1, -1) if not log[j].lstrip()[:1].isdigit()), "")
            return f"{complaint.strip()} at {source_line}" if source_line else complaint.strip()
    # No program reached the verifier: libbpf refused the object first (a kfunc the kernel lacks, a
    # map it cannot create); its own last complaint says why.
    for line in reversed(log):
        text = line.strip()
        if text.startswith("libbpf: ") and _LIBBPF_FAILURE.search(text) and "failed to load object" not in text:
            return text.removeprefix("libbpf: ")
    return ""
