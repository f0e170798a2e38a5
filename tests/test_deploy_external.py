# SPDX-License-Identifier: Apache-2.0
"""Installed upstream schedulers as a policy kind, on this host (no sched_ext here): the catalog
entry turns a configuration into arguments and refuses anything it does not declare, the deploy
controller refuses what the operator did not allow and a canary without a partial-switch flag, and
the node finds a binary only where nobody else could have replaced it.

The controller runs against this host's real node agent (``LocalNode``), whose ``external_which``
hashes the real file; starting a scheduler needs sched_ext, which tests/test_deploy_external_vm.py
does in the micro-VM."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from schedcp.deploy.artifacts import ArtifactStore
from schedcp.deploy.config import DeployPolicy, load_policy
from schedcp.deploy.controller import DeployController
from schedcp.deploy.models import CanaryTarget, DeployRequest, DeployState
from schedcp.deploy.store import DeployStore
from schedcp.errors import SchedcpError, UsageError
from schedcp.node import external as node_external
from schedcp.node.protocol import NodeError
from schedcp.repository import external as catalog
from schedcp.trial.node import LocalNode
from schedcp.trial.rounds import Arm, run_arm


# ---- the catalog entry: configuration -> arguments ----------------------------------------------
def test_an_entry_turns_declared_tunables_into_bound_flag_arguments():
    rusty = catalog.entry("scx_rusty")
    cmd = rusty.command({"slice_us_underutil": "20000", "kick_greedy_under": 50, "direct_greedy_numa": "true"})
    # Each value is joined to its flag, so no value can be read as an option of its own.
    assert cmd.args == ("--direct-greedy-numa", "--kick-greedy-under=50.0", "--slice-us-underutil=20000")
    assert cmd.partial_args == ("--partial",) and cmd.has_partial
    assert cmd.argv(partial=True)[-1] == "--partial" and "--partial" not in cmd.argv(partial=False)
    assert cmd.config == {"direct_greedy_numa": True, "kick_greedy_under": 50.0, "slice_us_underutil": 20000}
    nest = catalog.entry("scx_nest").command({"delay_us": 100, "find_fully_idle": False})
    assert nest.args == ("-d100",)  # short flags take the value attached; a false bool is left out


@pytest.mark.parametrize(
    ("name", "config", "code"),
    [
        ("scx_nope", {}, "external_unknown"),  # no such catalog entry
        ("scx_simple", {"turbo": 1}, "external_bad_config"),  # a flag the entry does not declare
        ("scx_simple", {"rodata.fifo_sched": 1}, "external_bad_config"),  # an object's key, not a flag
        ("scx_simple", {"fifo": "maybe"}, "external_bad_config"),
        ("scx_nest", {"delay_us": -1}, "external_bad_config"),  # below the entry's minimum
        ("scx_nest", {"r_max": 2**32}, "external_bad_config"),  # past u32
        ("scx_nest", {"r_max": "5; rm -rf /"}, "external_bad_config"),
        ("scx_nest", {"r_max": True}, "external_bad_config"),  # a bool is not an integer
        ("scx_rusty", {"kick_greedy_under": "nan"}, "external_bad_config"),
        ("scx_rusty", {"kick_greedy_under": 101}, "external_bad_config"),
        ("scx_p2dq", {"sched_mode": "turbo"}, "external_bad_config"),  # not one of the choices
        ("scx_flash", {"primary_domain": "--help"}, "external_bad_config"),  # text that is an option
        ("scx_flash", {"primary_domain": "a b"}, "external_bad_config"),
        ("scx_tickless", {"primary_domain": "0xzz"}, "external_bad_config"),  # not a cpumask
        ("scx_rusty", {"partial": True}, "external_bad_config"),  # the canary's flag, never a config
    ],
)
def test_the_entry_refuses_what_it_does_not_declare(name: str, config: dict, code: str):
    with pytest.raises(UsageError) as err:
        catalog.entry(name).command(config)
    assert err.value.code == code
    assert err.value.next_step


def test_a_binary_without_a_partial_switch_flag_cannot_run_partial():
    simple = catalog.entry("scx_simple").command({"fifo": True})
    assert simple.argv(partial=False) == ["-f"] and not simple.has_partial
    with pytest.raises(UsageError) as err:
        simple.argv(partial=True)
    assert err.value.code == "external_no_partial"


def test_only_bool_flags_can_be_partial_switches():
    from schedcp.repository.models import TunableSpec

    with pytest.raises(ValidationError):
        TunableSpec(name="p", type="u32", flag="-p", switch_partial=True, description="not a switch")
    with pytest.raises(ValidationError):
        TunableSpec(name="p", type="bool", variable="p", switch_partial=True, description="not a flag")
    assert {n for n, e in catalog.catalog().items() if e.partial_flag} == {"scx_rusty", "scx_flatcg"}


# ---- requests and the operator's policy at the boundary -----------------------------------------
def test_requests_name_exactly_one_kind_and_all_tasks_is_for_binaries_only():
    comm = CanaryTarget(comm="^w$")
    DeployRequest(external="scx_rusty", canary=comm)
    DeployRequest(external="scx_simple", all_tasks=True)
    for bad in (
        {"external": "scx_simple", "token_id": "a" * 24, "canary": comm},  # two kinds
        {"external": "scx_simple"},  # neither a canary nor all tasks
        {"token_id": "a" * 24, "all_tasks": True},  # an object always starts with a canary
        {"external": "scx_simple", "all_tasks": True, "canary": comm},
        {"external": "scx_simple", "all_tasks": True, "stay_partial": True},
        {"external": "../bin/sh", "all_tasks": True},
        {"external": "scx_simple", "all_tasks": True, "config": {"--x": 1}},
    ):
        with pytest.raises(ValidationError):
            DeployRequest.model_validate(bad)


def test_the_allow_list_and_the_path_in_the_config_file(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[deploy]\nexternal_allow = ["scx_rusty"]\nexternal_path = ["/opt/scx/bin"]\n')
    policy = load_policy(path)
    assert policy.external_allow == ["scx_rusty"] and policy.external_path == ["/opt/scx/bin"]
    assert DeployPolicy().external_allow == []  # nothing is allowed unless the operator says so
    for bad in ('external_allow = ["Bad Name"]', 'external_path = ["relative/bin"]', 'external_path = ["/a/../b"]'):
        path.write_text(f"[deploy]\n{bad}\n")
        with pytest.raises(UsageError):
            load_policy(path)


# ---- the node: only an installed binary nobody else could have replaced --------------------------
def _install(directory: Path, name: str) -> Path:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile("/bin/true", target)
    target.chmod(0o755)
    return target


def test_the_node_finds_binaries_by_name_in_safe_directories_only(tmp_path: Path):
    good = _install(tmp_path / "bin", "scx_rusty")
    found = node_external.which("scx_rusty", [str(tmp_path / "bin")])
    assert found["path"] == str(good) and found["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    for name in ("../bin/true", "/bin/true", "scx rusty", ""):
        with pytest.raises(NodeError) as err:
            node_external.which(name, [str(tmp_path / "bin")])
        assert err.value.code == "bad_args"
    with pytest.raises(NodeError) as err:
        node_external.which("scx_rusty", ["relative"])
    assert err.value.code == "bad_args"
    with pytest.raises(NodeError) as missing:
        node_external.which("scx_lavd", [str(tmp_path / "bin")])
    assert missing.value.code == "not_installed"
    # A directory others may write, or a file they own or may write: someone could swap it.
    open_dir = tmp_path / "open"
    _install(open_dir, "scx_rusty")
    open_dir.chmod(0o777)
    theirs = _install(tmp_path / "theirs", "scx_rusty")
    os.chown(theirs, 65534, 65534)
    writable = _install(tmp_path / "writable", "scx_rusty")
    writable.chmod(0o757)
    # A directory of ours inside one others may write (not sticky): they could swap the whole directory.
    _install(tmp_path / "open2" / "bin", "scx_rusty")
    (tmp_path / "open2").chmod(0o777)
    for where in (open_dir, tmp_path / "theirs", tmp_path / "writable", tmp_path / "open2" / "bin"):
        with pytest.raises(NodeError) as unsafe:
            node_external.which("scx_rusty", [str(where)])
        assert unsafe.value.code == "unsafe_binary", where
    # A link to a safe file from a directory others may write is refused too (the link can change).
    os.symlink(good, tmp_path / "open" / "scx_lavd")
    with pytest.raises(NodeError):
        node_external.which("scx_lavd", [str(open_dir)])
    assert stat.S_IMODE(os.stat(good).st_mode) == 0o755


def test_starting_needs_sched_ext_and_never_runs_a_changed_binary(tmp_path: Path):
    _install(tmp_path / "bin", "scx_rusty")
    with pytest.raises(NodeError) as err:
        node_external.external_start("scx_rusty", ["--partial"], [str(tmp_path / "bin")], expect_sha256="0" * 64)
    # This host has no sched_ext: refused before the binary is even looked at.
    assert err.value.code == "no_sched_ext"
    with pytest.raises(NodeError) as bad:
        node_external.external_start("scx_rusty", ["a\x00b"], [str(tmp_path / "bin")])
    assert bad.value.code == "bad_args"


# ---- the deploy controller over this host's node agent -------------------------------------------
@pytest.fixture
def controller(tmp_path: Path):
    from schedcp.daemon.deploy_ops import DaemonTokens

    bindir = tmp_path / "bin"
    _install(bindir, "scx_simple")
    _install(bindir, "scx_rusty")
    policy = DeployPolicy(external_allow=["scx_simple", "scx_rusty"], external_path=[str(bindir)])
    node = LocalNode()
    ctl = DeployController(
        node,
        DeployStore(tmp_path / "state"),
        ArtifactStore(tmp_path / "state"),
        policy,
        DaemonTokens(tmp_path / "state"),
        node_kind="local",
        external_search=[str(bindir)],
    )
    yield ctl
    ctl.wait_idle(5)


def _refused(ctl: DeployController, request: DeployRequest) -> SchedcpError:
    with pytest.raises(SchedcpError) as err:
        ctl.deploy(request, peer_uid=0)
    dep = ctl.store.recent(1)[0]
    assert dep.state == DeployState.refused  # on the record, with the reason
    story = ctl.store.story(dep.id)
    assert story is not None and story.transitions[-1].note == err.value.cause
    return err.value


def test_the_controller_refuses_what_the_operator_did_not_allow(controller: DeployController):
    err = _refused(controller, DeployRequest(external="scx_lavd", all_tasks=True))
    assert err.code == "external_not_allowed" and "external_allow" in err.next_step
    err = _refused(controller, DeployRequest(external="scx_central", all_tasks=True))
    assert err.code == "external_not_allowed"


def test_the_controller_refuses_a_canary_a_binary_cannot_run(controller: DeployController):
    err = _refused(controller, DeployRequest(external="scx_simple", canary=CanaryTarget(comm="^w$")))
    assert err.code == "external_no_partial" and "--all-tasks" in err.next_step


def test_the_controller_refuses_undeclared_flags_bad_values_and_missing_binaries(
    controller: DeployController, tmp_path: Path
):
    err = _refused(controller, DeployRequest(external="scx_simple", all_tasks=True, config={"verbose": True}))
    assert err.code == "external_bad_config"
    err = _refused(controller, DeployRequest(external="scx_simple", all_tasks=True, config={"fifo": "maybe"}))
    assert err.code == "external_bad_config"
    (tmp_path / "bin" / "scx_simple").unlink()
    err = _refused(controller, DeployRequest(external="scx_simple", all_tasks=True))
    assert err.code == "not_installed"


def test_an_allowed_binary_passes_the_checks_as_an_external_artefact(controller: DeployController, tmp_path: Path):
    from schedcp.deploy import external as deploy_external

    request = DeployRequest(external="scx_rusty", canary=CanaryTarget(comm="^w$"), config={"perf": "512"})
    command, artefact = deploy_external.check_request(
        request, controller.policy, controller.node, kernel="k", search=[str(tmp_path / "bin")]
    )
    assert command.args == ("--perf=512",) and command.partial_args == ("--partial",)
    assert artefact.kind == "external" and artefact.binary == "scx_rusty" and artefact.config == {"perf": 512}
    assert artefact.object_sha256 == hashlib.sha256((tmp_path / "bin" / "scx_rusty").read_bytes()).hexdigest()
    # A different file is a different artefact for the refusal list and the last known good.
    other = artefact.model_copy(update={"object_sha256": "1" * 64})
    assert other.key != artefact.key


def test_a_partial_trial_arm_of_a_binary_without_the_flag_is_an_attach_failure():
    arm = Arm("scx_simple", external=catalog.entry("scx_simple").command({}))
    assert not arm.is_baseline
    rec = run_arm(LocalNode(), arm, ["true"], timeout_s=5, partial=True)
    assert rec.status == "attach_failed" and rec.error_code == "external_no_partial"
    assert rec.run is None  # nothing ran


def test_daemon_trial_arms_of_binaries_are_allowed_partial_and_declared_only(controller: DeployController, tmp_path):
    from schedcp.daemon.audit import AuditLog
    from schedcp.daemon.deploy_ops import DeployService
    from schedcp.daemon.trial_ops import TrialArmArgs, TrialService

    service = DeployService(tmp_path / "svc", AuditLog.for_state_dir(tmp_path / "svc"), node_spec=None, policy=None)
    service.controller = controller
    trials = TrialService(service)

    def arm(**kw):
        return trials._arm(TrialArmArgs(name="x", argv=["true"], timeout_s=5, **kw))

    with pytest.raises(ValidationError):
        TrialArmArgs(name="x", argv=["true"], timeout_s=5, token_id="a" * 24, external="scx_rusty")
    with pytest.raises(SchedcpError) as err:
        arm(external="scx_lavd")
    assert err.value.code == "external_not_allowed"
    with pytest.raises(UsageError) as err:
        arm(external="scx_simple")  # every arm on the daemon's node is partial: it needs the flag
    assert err.value.code == "external_no_partial"
    with pytest.raises(UsageError) as err:
        arm(external="scx_rusty", config={"no_such_flag": 1})
    assert err.value.code == "external_bad_config"
    rusty = arm(external="scx_rusty", config={"perf": 1024})
    assert rusty.external is not None and rusty.external.argv(partial=True) == ["--perf=1024", "--partial"]
    assert rusty.external.search == (str(tmp_path / "bin"),)
