# SPDX-License-Identifier: Apache-2.0
"""`schedcp optimize --deploy --demo` end to end (issue 13's done-when): the loop measures its
candidate against EEVDF in the demo's micro-VM, the best one goes through the daemon's verifier for
a token, is deployed on the daemon's own VM node with a canary on the workload, is promoted and
watched by the breaker, and `schedcp audit` tells the deployment's story from token to promotion.

Three boots: the demo's testbed, the daemon's node and the daemon's verifier. The demo's best policy
is ljf_batch, which makes batch jobs wait on purpose up to a bound it declares (metadata
`[wait_bound]`); before that declaration the daemon's verifier refused it, so this path never got
past verification."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from schedcp.deploy.testing import Daemon

pytestmark = pytest.mark.vm


def test_optimize_deploy_demo_ends_with_a_deployed_watched_policy(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="schedcp-optdeploy-"))
    root.chmod(0o755)
    daemon = Daemon(root)
    daemon.start()
    try:
        out = daemon.cli(
            "optimize",
            "--demo",
            "--deploy",
            "--iterations",
            "1",
            "--json",
            timeout=1800,
            env={"SCHEDCP_DATA_DIR": str(tmp_path / "data")},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        doc = json.loads(out.stdout)
        trial = doc["iterations"][0]["execution"]["trial"]
        assert trial["ok"] and trial["ratio"] > 1.0, json.dumps(trial)[-2000:]
        dep = doc["deployment"]
        assert dep["deployed"] is True and dep["state"] in ("promoted", "partial"), dep
        assert dep["token_id"] and dep["canary_pid"] > 0
        policy = doc["iterations"][0]["execution"]["candidate"]["policy"]

        # The deployed policy runs on the daemon's node, and the breaker watches it.
        status = daemon.status()
        active = status["active"]
        assert active["id"] == dep["deployment"] and active["state"] == dep["state"], status
        assert active["artefact"]["scheduler"] == policy
        assert status["node"]["state"] == "enabled" and status["node"]["switch_all"] == 1, status["node"]
        assert status["last_known_good"]["deployment_id"] == dep["deployment"]

        # The story, from the daemon's verification to the promotion, with no trip in between.
        story = daemon.json("audit", "--deployment", dep["deployment"])[0]
        states = [t["state"] for t in story["transitions"]]
        assert states == ["requested", "token_checked", "baseline", "canary", "promoted"], states
        assert story["trips"] == []
        # What the deployment measured went back to the repository as a tier-3 record.
        assert dep["recorded"] and "error" not in dep["recorded"], dep["recorded"]
    finally:
        daemon.kill(signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
