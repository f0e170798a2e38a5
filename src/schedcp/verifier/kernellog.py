# SPDX-License-Identifier: Apache-2.0
"""Turn a libbpf/kernel-verifier log into the few lines an agent needs to fix the program.

The kernel verifier prints, for the program it rejected, every instruction it walked, with
``; <source line> @ <file>:<line>`` annotations (from BTF line info), and ends with the error
(``R0 invalid mem access 'map_value_or_null'``) and a ``processed N insns`` summary. The failing
source line is the last annotation before the error. When libbpf fails before the verifier runs
(an unresolved kfunc, a bad struct_ops field) there is no program log, only ``libbpf:`` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BEGIN = "-- BEGIN PROG LOAD LOG --"
_END = "-- END PROG LOAD LOG --"
_ANNOTATION = re.compile(r"^;\s?(?P<code>.*?)\s@\s(?P<file>[^:\s]+):(?P<line>\d+)\s*$")
_INSN = re.compile(r"^\d+:\s")
_STATE = re.compile(r"^(?:from \d+ to \d+:|\d+: R\d|R\d+[_=]|\s*frame\d|last_idx|regs=|parent didn't|mark_precise)")
_PROG = re.compile(r"libbpf: prog '(?P<prog>[^']+)': BPF program load failed: (?P<why>.*)")
_SUMMARY = re.compile(r"^(?:processed \d+ insns|verification time|stack depth)")
_LIBBPF_FAIL = re.compile(
    r"libbpf: (?!.*failed to load object)(?!.*BPF program load failed)"
    r"(?=.*(?:fail|not found|error|invalid|unresolved|cannot|mismatch|unsupported))(?P<msg>.*)",
    re.I,
)
MAX_EXCERPT_LINES = 24
MAX_LINE = 200

# Common verifier complaints and what usually fixes them, phrased for an agent.
HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.I), h)
    for p, h in (
        (
            r"map_value_or_null|_or_null'",
            "check the pointer for NULL (e.g. the result of bpf_map_lookup_elem or "
            "bpf_task_storage_get) before dereferencing it",
        ),
        (
            r"Unreleased reference|reference has not been released",
            "release every acquired object on every path "
            "(bpf_task_release, bpf_cpumask_release, bpf_obj_drop), including early returns",
        ),
        (
            r"invalid func unknown|poisoned|failed to find kernel BTF type ID|extern \(func ksym\)",
            "a kfunc that this kernel does not have is called: guard it with bpf_ksym_exists() or use the name this "
            "kernel provides",
        ),
        (
            r"infinite loop|back-edge|BPF program is too large|too many states|complexity limit",
            "bound the loop with a small constant (or use bpf_for / bpf_loop) so the verifier can prove it ends",
        ),
        (
            r"invalid access to map value|value_size=|off=.*size=|out of bounds|invalid mem access 'scalar'",
            "bounds-check the index or offset against the array/map size before the access",
        ),
        (
            r"calling kernel function .* is not allowed|kernel function .* not allowed|cannot be called from",
            "this kfunc may not be called from this callback (e.g. dispatch-only kfuncs in enqueue, or sleepable ones "
            "outside ops.init); move the call to a callback that allows it",
        ),
        (
            r"At program exit the register R0|R0 !read_ok|R0 has (smin|value)",
            "return a value the callback allows "
            "(select_cpu returns a CPU, init/init_task return 0 or a negative errno)",
        ),
        (
            r"R\d+ type=\w+ expected=|arg#\d+ expected|expected pointer",
            "a helper or kfunc got the wrong kind of "
            "argument: pass the pointer type its prototype asks for (trusted task pointer, map value, stack buffer)",
        ),
        (r"division by zero|div by zero", "guard the divisor against zero"),
        (
            r"min value is negative|unbounded min value|negative",
            "clamp the value to a known non-negative range before using it as an index or size",
        ),
        (
            r"invalid stack|stack out of bounds|invalid indirect read",
            "initialise stack buffers fully before passing them to helpers and keep accesses inside the buffer",
        ),
        (
            r"dereference of modified|invalid (bpf_context|ctx) access",
            "read callback arguments through the "
            "BPF_PROG/BPF_STRUCT_OPS parameters, not by offsetting the context pointer",
        ),
        (
            r"-EINVAL|Invalid argument",
            "a struct_ops field or flag is invalid for this kernel (empty .name, unknown "
            "flag, or a callback with the wrong signature)",
        ),
    )
)


@dataclass
class VerifierDiagnosis:
    error: str
    program: str | None = None
    source_line: int | None = None
    source_code: str | None = None
    source_file: str | None = None
    instruction: str | None = None
    hint: str = ""
    excerpt: list[str] = field(default_factory=list)


def _clip(line: str) -> str:
    line = line.rstrip()
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def diagnose(log: list[str], source_name: str | None = None, *, fallback_cause: str = "") -> VerifierDiagnosis:
    """The failing program, error, source line and a fix hint from a libbpf load log."""
    lines = [ln.rstrip("\n") for ln in log if ln is not None]
    program = None
    for ln in lines:
        m = _PROG.search(ln)
        if m:
            program = m.group("prog")
    begin = max((i for i, ln in enumerate(lines) if _BEGIN in ln), default=None)
    if begin is not None:
        end = next((i for i in range(begin + 1, len(lines)) if _END in lines[i]), len(lines))
        block = lines[begin + 1 : end]
        diag = _from_program_log(block, source_name)
        diag.program = program
        return diag
    problems = [m.group("msg").strip() for ln in lines if (m := _LIBBPF_FAIL.search(ln))]
    error = problems[-1] if problems else (fallback_cause or "the program failed to load (no verifier log)")
    return VerifierDiagnosis(
        error=_clip(error),
        program=program,
        hint=hint_for(" ".join(problems) or error),
        excerpt=[_clip(p) for p in problems[-MAX_EXCERPT_LINES:]] or [_clip(ln) for ln in lines[-8:]],
    )


def _from_program_log(block: list[str], source_name: str | None) -> VerifierDiagnosis:
    tail = len(block)
    while tail > 0 and (not block[tail - 1].strip() or _SUMMARY.match(block[tail - 1].strip())):
        tail -= 1
    # The error: the trailing run of lines that are neither instructions nor annotations.
    start = tail
    while start > 0:
        text = block[start - 1].strip()
        if not text or _INSN.match(text) or text.startswith(";") or _STATE.match(text):
            break
        start -= 1
    error_lines = [b.strip() for b in block[start:tail]][-3:]
    error = " / ".join(error_lines) or (block[tail - 1].strip() if tail else "rejected by the verifier")
    annotation = None
    instruction = None
    for text in reversed(block[:start]):
        text = text.strip()
        if instruction is None and _INSN.match(text):
            instruction = text
        m = _ANNOTATION.match(text)
        if m and (
            source_name is None or m.group("file").endswith(source_name) or source_name.endswith(m.group("file"))
        ):
            annotation = m
            break
        if m and annotation is None:
            annotation = m  # another file (e.g. a header): better than nothing, keep looking for ours
    excerpt_start = max(0, start - MAX_EXCERPT_LINES + len(error_lines))
    return VerifierDiagnosis(
        error=_clip(error),
        source_line=int(annotation.group("line")) if annotation else None,
        source_code=_clip(annotation.group("code").strip()) if annotation else None,
        source_file=annotation.group("file") if annotation else None,
        instruction=_clip(instruction) if instruction else None,
        hint=hint_for(error),
        excerpt=[_clip(b) for b in block[excerpt_start:tail]],
    )


def hint_for(error: str) -> str:
    for pattern, hint in HINTS:
        if pattern.search(error):
            return hint
    return "read the verifier excerpt: the last '; … @ file:line' annotation is the source line it rejected"
