# SPDX-License-Identifier: Apache-2.0
"""The kernel's own sched_ext examples on every test kernel, in the micro-VM (one boot per kernel).

Each example is built from the kernel's tools/sched_ext with that kernel's scx headers, checked for
what its userspace half does, loaded through the node's scx loader and run under the correctness
load; the outcome must be the one tests/data/scx_examples.toml records (and docs/verifier.md
explains). Then ``schedcp verify`` runs on scx_simple, the issue's acceptance check.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import build, headers, scx_headers, scx_loader, scx_source, scx_userspace
from schedcp.trial.attached import attached, failure_detail
from schedcp.trial.models import Policy
from schedcp.trial.node import NodeOpError
from schedcp.verifier import load as verifier_load
from schedcp.verifier.pipeline import VerifyOptions, verify

pytestmark = pytest.mark.vm

EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((Path(__file__).parent / "data" / "scx_examples.toml").read_text())
KERNELS = sorted(EXPECTED)
LOAD_SECONDS = 3.0


def _examples(spec: str) -> list[str]:
    return sorted(k for k, v in EXPECTED[spec].items() if isinstance(v, dict))


@pytest.fixture(scope="module", params=KERNELS)
def guest(request):
    spec = request.param
    kernel = kernel_mod.cached(spec)
    scx = scx_headers.for_kernel(kernel)
    assert scx.origin.startswith(EXPECTED[spec]["headers"]), scx.origin
    with MicroVM(VMConfig(cpus=2, kernel=spec)) as vm:
        assert vm.node is not None
        yield spec, kernel, scx, vm.node, verifier_load.upload(vm.node)


def _outcome(node, script: str, policy: Policy) -> tuple[str, str]:
    """(outcome, reason) of attaching the policy and running the correctness load under it."""
    try:
        with attached(node, policy, watchdog_ms=None) as pol:
            verifier_load.run(node, script, LOAD_SECONDS)
            health = pol.check()
            if health.stayed:
                return "runs", ""
            info = node.call("exit_info", {"handle": pol.handle}, timeout_s=30).get("exit_info") or {}
            return "ejected", f"{health.reason} {scx_loader.exit_summary(info)}"
    except NodeOpError as exc:
        outcome = "rejected" if exc.code == "load_failed" else exc.code
        return outcome, f"{exc.cause} {failure_detail(exc)} {scx_loader.exit_summary(exc.details.get('exit_info'))}"


def test_kernel_examples_behave_as_recorded(guest) -> None:
    spec, kernel, scx, node, script = guest
    assert scx.examples_dir is not None
    shipped = sorted(p.name.removesuffix(".bpf.c") for p in scx.examples_dir.glob("*.bpf.c"))
    assert shipped == _examples(spec), "the table must cover exactly the examples this source ships"
    seen: dict[str, tuple[str, str]] = {}
    for name in shipped:
        want = EXPECTED[spec][name]
        source = scx.examples_dir / f"{name}.bpf.c"
        if want["outcome"] == "does_not_compile":
            with pytest.raises(build.BuildError, match=want["why"]):
                scx_source.build_for_kernel(source, kernel)
            continue
        built = scx_source.build_for_kernel(source, kernel)
        needs = scx_userspace.analyze(built.result.object_path, source, list(built.sources.texts().values()))
        rodata = dict(want.get("rodata", {}))
        summary = needs.summary(set(rodata))
        if want["outcome"] == "needs_userspace":
            assert all(word in summary for word in want["needs"]), (name, summary)
        else:
            assert summary == "", (name, summary)
        if want["outcome"] == "libbpf_crash":
            continue
        policy = Policy(
            name=name,
            object_path=built.result.object_path,
            include_dir=headers.kernel_include_dir(kernel),
            loader=scx_loader.options_for(built.result.object_path, rodata=rodata, kernel=kernel),
        )
        seen[name] = _outcome(node, script, policy)
    for name, (outcome, reason) in seen.items():
        want = EXPECTED[spec][name]
        expected = want.get("bare", want["outcome"])
        assert outcome == expected, f"{spec}/{name}: {outcome} ({reason}), recorded {expected}"
        if "why" in want:
            assert re.search(want["why"], reason), f"{spec}/{name}: {reason!r} does not match {want['why']!r}"


@pytest.mark.parametrize("spec", KERNELS)
def test_verify_scx_simple(spec: str) -> None:
    """The issue's acceptance check: `schedcp verify <tree>/tools/sched_ext/scx_simple.bpf.c`."""
    kernel = kernel_mod.cached(spec)
    scx = scx_headers.for_kernel(kernel)
    assert scx.examples_dir is not None
    report = verify(VerifyOptions(target=str(scx.examples_dir / "scx_simple.bpf.c"), kernel=spec, seconds=3.0))
    want = EXPECTED[spec]["scx_simple"]
    if want["outcome"] == "runs":
        assert report.verdict == "pass", report.reason
        assert report.token, "a pass on every stage signs a deployment token"
        assert report.metrics["scx_headers"]["origin"].startswith(EXPECTED[spec]["headers"])
    else:
        assert report.verdict == "fail" and re.search(want["why"], report.reason), report.reason
