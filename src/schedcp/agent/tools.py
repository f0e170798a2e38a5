# SPDX-License-Identifier: Apache-2.0
"""The agents' one door to SchedCP: a thin adapter over the services.

Agents never import the analysis engine, the repository or the testbed themselves; they call
``Services``. Today it calls the Python APIs in-process (the same code behind the MCP server's
tools); a transport that speaks MCP to a remote ``schedcp mcp`` can replace it without touching
any agent. Everything here is bounded by the services themselves (byte budgets, validation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedcp.agent.candidates import Built
from schedcp.agent.models import Candidate, Trial
from schedcp.agent.session import Target, VmSession

OBSERVE_MAX_S = 300.0


class Services:
    def __init__(
        self,
        session: VmSession,
        target: Target,
        *,
        repo_db: Path | str | None = None,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.session = session
        self.target = target
        self.repo_db = repo_db
        self.progress = progress
        self._repo: Any = None
        self._raw: dict[str, Any] | None = None
        self.observations = 0

    # -- repository -----------------------------------------------------------------------------
    @property
    def repository(self) -> Any:
        if self._repo is None:
            from schedcp.repository.service import RepositoryService

            self._repo = RepositoryService(self.repo_db)
        return self._repo

    @property
    def repository_path(self) -> str | None:
        """Where results went (None when no agent needed the repository)."""
        return str(self._repo.store.path) if self._repo is not None else None

    def search(self, query: str, k: int = 5) -> dict[str, Any]:
        return self.repository.search(query, k=k)

    def show(self, name: str) -> dict[str, Any]:
        return self.repository.show(name)

    def source(self, name: str) -> str:
        return self.repository.source(name)

    def best_config(self, profile: dict[str, Any]) -> dict[str, Any]:
        return self.repository.best_config(profile)

    def antipatterns(self, profile: dict[str, Any]) -> list[dict[str, Any]]:
        return self.repository.antipatterns(profile=profile)

    def primitives(self, query: str | None = None) -> dict[str, Any]:
        if query:
            return self.repository.search_primitives(query)
        return {"primitives": self.repository.primitives()}

    def primitive(self, name: str) -> dict[str, Any]:
        return self.repository.primitive(name)

    def record_result(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.repository.record_result(data)

    def promote(self, name: str, reason: str) -> dict[str, Any]:
        return self.repository.promote(name, reason=reason, actor="sched-agent")

    def annotate(self, note: str, policy: str | None, profile: dict[str, Any] | None) -> dict[str, Any]:
        return self.repository.annotate_antipattern(note, policy=policy, profile=profile, actor="sched-agent")

    def add_generated(self, candidate: Candidate, description: str) -> dict[str, Any]:
        data = {
            "name": candidate.policy,
            "kind": "generated",
            "title": candidate.rationale[:120],
            "description": description,
            "source": candidate.source,
            "tags": ["sched-agent", candidate.level],
            "workloads": [self.target.label[:200]],
        }
        return self.repository.add_policy(
            data,
            parent=candidate.parent,
            actor="sched-agent",
            reason=f"{candidate.level} written by sched-agent",
            origin="agent",
        )

    # -- analysis (in the guest) ----------------------------------------------------------------
    def observe(
        self, *, refresh: bool = False, interval_s: float = 0.1, probe: list[str] | None = None
    ) -> dict[str, Any]:
        """Run the target once under EEVDF with the sampler; the raw observation is kept for renders."""
        if self._raw is not None and not refresh and probe is None:
            return self._raw
        from schedcp.agent.trial import GUEST_DEAD
        from schedcp.analysis.engine import Engine
        from schedcp.errors import SchedcpError

        self.progress(f"observing {self.target.label} in the guest" + (f" with probes {probe}" if probe else ""))
        for attempt in (1, 2):
            engine = Engine.for_vm(self.session.vm)
            try:
                raw = engine.observe_command(
                    self.target.argv,
                    duration_s=min(self.target.timeout_s, OBSERVE_MAX_S),
                    interval_s=interval_s,
                    probe=probe,
                )
                break
            except SchedcpError as exc:
                if exc.code not in GUEST_DEAD or attempt == 2:
                    raise
                self.progress(f"the guest died while observing ({exc.cause[:100]}); observing again in a fresh boot")
                self.session.discard()
        self.observations += 1
        self._raw = raw
        return raw

    def render(self, detail: str) -> dict[str, Any]:
        from schedcp.analysis import summarize

        return summarize.render(self.observe(), detail, "vm")  # type: ignore[arg-type]

    def profile(self) -> Any:
        from schedcp.analysis.derive import build_profile

        return build_profile(self.observe(), "vm")

    # -- toolchain and testbed ------------------------------------------------------------------
    def validate(self, candidate: Candidate) -> Candidate:
        from schedcp.agent import candidates

        return candidates.validate(candidate, self.repository)

    def build(self, candidate: Candidate) -> Built:
        from schedcp.agent import candidates

        return candidates.build(candidate, self.session.kernel, self.repository)

    def static_findings(self, source: str, config: dict[str, Any]) -> list[dict[str, Any]]:
        from schedcp.agent import candidates

        return candidates.static_findings(source, config)

    def verify_source(self, candidate: Candidate) -> dict[str, Any]:
        """The Execution Verifier's whole pipeline on new code, in its own micro-VM (no token: the
        agent only trials; deployment asks the daemon for a token)."""
        import tempfile

        from schedcp.verifier.pipeline import VerifyOptions, verify

        assert candidate.source is not None
        with tempfile.TemporaryDirectory(prefix="schedcp-agent-") as tmp:
            path = Path(tmp) / f"{candidate.policy.replace('.', '_')}.bpf.c"
            path.write_text(candidate.source)
            report = verify(
                VerifyOptions(target=str(path), kernel=self.session.kernel_spec, issue_token=False),
                progress=self.progress,
            )
        findings = [f for st in report.stages for f in st.findings if f.severity == "error"][:6]
        return {
            "verdict": report.verdict,
            "reason": report.reason,
            "stages": [{"name": st.name, "status": st.status, "summary": st.summary} for st in report.stages],
            "errors": [
                {"stage": f.stage, "id": f.id, "message": f.message, "line": f.line, "hint": f.hint} for f in findings
            ],
        }

    def trial(self, built: Built, config: dict[str, Any], goal: str, rounds: int) -> Trial:
        from schedcp.agent.trial import run_trial

        return run_trial(self.session, self.target, built, config, goal, rounds=rounds, progress=self.progress)

    @property
    def kernel_release(self) -> str:
        kernel = self.session.kernel
        return getattr(kernel, "release", "") or ""

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None
