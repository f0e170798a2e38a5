# SPDX-License-Identifier: Apache-2.0
"""`schedcp optimize`: sched-agent's Observation -> Planning -> Execution -> Learning loop.

    schedcp optimize --demo                        # built-in long-tail batch, built-in planner, offline
    schedcp optimize --workload wakelat --goal p99_latency
    schedcp optimize --model anthropic -- python3 -m schedcp_workloads.batch --scale 0.5
    schedcp optimize --demo --server 'schedcp mcp'   # the same agents against a SchedCP over stdio/HTTP
    schedcp optimize --target local -- ./my-workload   # trials on this sched_ext host, through the daemon

The agents reach SchedCP only through MCP: by default a server in this process over the SDK's
in-memory transport (--call-log FILE keeps its log of tool calls), or --server's. The workload runs
in the server's sched_ext micro-VM testbed, or with --target daemon|local on the node the SchedCP
daemon owns (docs/deploy.md, "Trials on the daemon's node"); every candidate is measured against
EEVDF in the same boot and the outcome is recorded in the policy repository ($SCHEDCP_REPO_DB).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from schedcp.bench.usermetric import MetricSpec
from schedcp.cli.common import JsonOption, console, emit, err_console, fail, progress
from schedcp.cli.guestopts import PackageOption, WithOption, extras_from, prepare_image
from schedcp.errors import SchedcpError
from schedcp.testbed.extras import GuestExtras

DEMO_WORKLOAD = "longtail"
DEMO_ITERATIONS = 2
DEMO_ROUNDS = 3  # the median of three interleaved rounds shrugs off one noisy round


def _line(agent: str, message: str) -> str:
    return f"[{agent:>11}] {message}"


def _render(doc: dict[str, Any]) -> None:
    best = doc.get("best")
    console.print()
    console.print(
        f"[bold]workload[/] {doc['target']['label']}  [bold]goal[/] {doc['goal']}  "
        f"[bold]kernel[/] {doc.get('kernel')}  [bold]model[/] {doc['model']}",
        highlight=False,
    )
    for it in doc["iterations"]:
        ex = it["execution"]
        t = ex.get("trial") or {}
        label = _label(ex["candidate"])
        if t.get("ok"):
            console.print(
                f"  {it['n']}. {label}: {t['metric']} EEVDF {t['baseline_value']} → {t['policy_value']}"
                f"  (x{t['ratio']}, won {sum(1 for r in t['rounds'] if (r['ratio'] or 0) > 1)} of "
                f"{len(t['rounds'])} rounds)",
                highlight=False,
            )
        else:
            console.print(f"  {it['n']}. {label}: failed — {ex.get('error')}", highlight=False)
    if best:
        verdict = "faster than EEVDF" if best["beat_eevdf"] else "not better than EEVDF"
        console.print(
            f"[bold]best:[/] {best['label']} — {best['metric']} {best['eevdf']} under EEVDF vs "
            f"{best['policy_value']} ({best['ratio']}x, {verdict})",
            highlight=False,
        )
    else:
        console.print("[bold]best:[/] no candidate was measured", highlight=False)
    if doc.get("deployment"):
        d = doc["deployment"]
        where = f"{d['deployment']} {d['state']}" if d.get("deployment") else f"not deployed ({d.get('reason')})"
        console.print(f"[bold]deployment:[/] {where}", highlight=False)
    recorded = [it["lesson"]["recorded"] for it in doc["iterations"] if (it.get("lesson") or {}).get("recorded")]
    console.print(f"[bold]recorded:[/] {len(recorded)} result(s) in {doc.get('repository')}", highlight=False)
    total = doc["cost"]["total"]
    price = doc["cost"].get("price") or {}
    usd = price.get("usd")
    money = "no price known" if usd is None else f"${usd:.4f}"
    console.print(
        f"[bold]cost:[/] {total['tool_calls']} MCP tool calls, {total['bytes_read']} bytes read by agents, "
        f"{total['input_tokens']}+{total['output_tokens']} model tokens "
        f"(cache read {total['cache_read_tokens']}, write {total['cache_write_tokens']}), {money}; "
        f"{doc['wall_s']} s",
        highlight=False,
    )


def _label(candidate: dict[str, Any]) -> str:
    cfg = ", ".join(f"{k}={v}" for k, v in sorted((candidate.get("config") or {}).items()))
    return f"{candidate['policy']}({cfg})" if cfg else candidate["policy"]


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": False})
    def optimize(
        command: list[str] = typer.Argument(None, help="Command to optimise, run in the guest (after --)."),
        workload: str | None = typer.Option(
            None, "--workload", "-w", help="A built-in guest workload, e.g. longtail, batch, wakelat."
        ),
        workload_args: list[str] = typer.Option(
            [],
            "--workload-arg",
            help="Argument for the built-in workload (repeatable), e.g. --workload-arg=--tasks --workload-arg=20.",
        ),
        goal: str = typer.Option("auto", "--goal", "-g", help="auto | makespan | p99_latency | throughput | fairness."),
        model: str = typer.Option(
            "builtin",
            "--model",
            "-m",
            help="builtin (offline) | anthropic[:MODEL] | openai[:MODEL] (OPENAI_BASE_URL for compatible servers).",
        ),
        iterations: int = typer.Option(DEMO_ITERATIONS, "--iterations", "-n", help="Candidates to try (1..10)."),
        rounds: int = typer.Option(
            None, "--rounds", help="Interleaved EEVDF/candidate rounds per trial (1..3; default 2, 3 with --demo)."
        ),
        cpus: int = typer.Option(2, "--cpus", help="Guest vCPUs."),
        kernel: str = typer.Option("unstable", "--kernel", "-k", help="Cached test kernel spec."),
        timeout: float = typer.Option(180.0, "--timeout", help="Seconds one run of the workload may take."),
        demo: bool = typer.Option(
            False,
            "--demo",
            help="Optimise the built-in long-tail batch with the built-in planner and narrate each agent's step.",
        ),
        server: str | None = typer.Option(
            None,
            "--server",
            help="Reach SchedCP here instead of in this process: a command serving MCP on stdio "
            "(e.g. 'schedcp mcp') or an http(s)://.../mcp URL (token from SCHEDCP_MCP_TOKEN).",
        ),
        call_log: Path | None = typer.Option(
            None, "--call-log", help="In-process server: append its log of tool calls (JSON lines) to this file."
        ),
        prices: Path | None = typer.Option(
            None, "--prices", help="Price table (JSON or TOML, USD per million tokens) overriding the shipped one."
        ),
        package: list[str] = PackageOption,
        with_: list[str] = WithOption,
        metric: str | None = typer.Option(
            None,
            "--metric",
            help="Goal metric from the program's output: a regex with one group, e.g. 'p99=(\\d+)', or json:FIELD "
            "(default: the goal's metric among those the workload reports, else wall time).",
        ),
        lower_is_better: bool | None = typer.Option(
            None, "--lower-is-better/--higher-is-better", help="Direction of --metric (default: from its name)."
        ),
        target: str = typer.Option(
            "vm",
            "--target",
            "-t",
            help="Where trials run: vm (a micro-VM this command boots), daemon (the node the SchedCP daemon owns: "
            "this host or its rehearsal micro-VM; candidates are verified by the daemon and only the workload's "
            "tasks are switched), local (the same, insisting that node is this sched_ext host).",
        ),
        deploy: bool = typer.Option(
            False,
            "--deploy",
            help="Hand the best verified candidate to the daemon: canary on the workload on its node, then "
            "promotion under the circuit breaker; the deployment's measurement is recorded (docs/deploy.md).",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Let sched-agent observe a workload, plan sched_ext policies, measure them against EEVDF in the
        micro-VM, and record what it learned."""
        try:
            doc = _optimize(
                command or [],
                workload,
                workload_args,
                goal,
                model,
                iterations,
                rounds,
                cpus,
                kernel,
                timeout,
                demo,
                as_json,
                server=server,
                call_log=call_log,
                prices=prices,
                packages=package,
                with_=with_,
                metric=metric,
                lower_is_better=lower_is_better,
                deploy=deploy,
                node=target,
            )
        except SchedcpError as exc:
            raise fail(exc, as_json) from None
        emit(doc, as_json, _render)


def _optimize(
    command: list[str],
    workload: str | None,
    workload_args: list[str],
    goal: str,
    model: str,
    iterations: int,
    rounds: int | None,
    cpus: int,
    kernel: str,
    timeout: float,
    demo: bool,
    as_json: bool,
    *,
    server: str | None = None,
    call_log: Path | None = None,
    packages: list[str] | None = None,
    with_: list[str] | None = None,
    metric: str | None = None,
    lower_is_better: bool | None = None,
    prices: Path | None = None,
    deploy: bool = False,
    node: str = "vm",
) -> dict[str, Any]:
    from pydantic import ValidationError

    from schedcp.agent.client import SchedcpClient
    from schedcp.agent.loop import OptimizeOptions, Optimizer
    from schedcp.errors import UsageError
    from schedcp.services.models import TargetSpec
    from schedcp.services.operation import field_errors
    from schedcp.services.testbed import make_target

    if demo:
        if command or workload:
            raise UsageError("--demo picks its own workload", "drop --workload and the command, or drop --demo")
        workload = DEMO_WORKLOAD
    if rounds is None:
        rounds = DEMO_ROUNDS if demo else 2
    if workload and command:
        raise UsageError("give either --workload NAME or a command after --, not both", "pick one target")
    if not workload and not command:
        raise UsageError("nothing to optimise", "give --workload NAME (e.g. longtail), a command after --, or --demo")
    extras = extras_from(packages, with_)
    if node != "vm" and extras:
        raise UsageError("--package and --with add to the micro-VM's guest", "drop them, or use --target vm")
    named = None
    if metric is not None:
        way = None if lower_is_better is None else ("lower" if lower_is_better else "higher")
        named = MetricSpec.parse(metric, way)
    elif lower_is_better is not None:
        raise UsageError("--lower-is-better/--higher-is-better say which way --metric points", "add --metric")
    if extras and extras.files and server:
        raise UsageError("--with sends files from this machine to the in-process server's guest", "drop --server")
    try:
        spec = TargetSpec(
            workload=workload,
            workload_args=workload_args,
            argv=list(command) or None,
            timeout_s=timeout,
            packages=list(extras.packages) if extras else [],
            metric=named,
        )
    except ValidationError as exc:
        raise UsageError(f"invalid target: {field_errors(exc)}", "see schedcp optimize --help") from None
    target = make_target(spec)  # refuses bad input here, before anything starts
    if extras and not server:
        prepare_image(extras, lambda m: print(f"· {m}", file=sys.stderr, flush=True) if as_json else progress(m))
    options = OptimizeOptions(
        target=spec,
        goal=goal,
        model=model,
        iterations=iterations,
        rounds=rounds,
        cpus=cpus,
        kernel=kernel,
        prices=prices,
        node=node,
    )
    if server:
        if call_log is not None:
            raise UsageError("--call-log is for the in-process server", "give --call-log to the remote `schedcp mcp`")
        client = SchedcpClient.remote(server)
    else:
        client = in_process_client(call_log, guest_files=extras if extras and extras.files else None)

    def narrate(agent: str, message: str) -> None:
        # The story goes to stdout as it happens; with --json stdout is reserved for the document.
        if as_json:
            print(_line(agent, message), file=sys.stderr, flush=True)
        else:
            console.print(_line(agent, message), highlight=False, markup=False)

    def status(message: str) -> None:
        if as_json:
            print(f"· {message}", file=sys.stderr, flush=True)
        else:
            progress(message)

    optimizer = Optimizer(options, client=client, narrate=narrate, progress=status)  # validates options, model, key
    if not as_json:
        where = f"the micro-VM ({kernel}, {cpus} vCPUs)" if node == "vm" else f"the SchedCP daemon's node ({node})"
        err_console.print(
            f"[dim]sched-agent: {target.label} in {where}, "
            f"model {model}, up to {iterations} candidate(s), {rounds} round(s) each, "
            f"SchedCP over MCP ({client.where})[/]",
            highlight=False,
        )
    doc = optimizer.run()
    if deploy:
        from schedcp.daemon.client import DaemonClient
        from schedcp.deploy.handoff import deploy_best

        try:
            with DaemonClient() as daemon:
                doc["deployment"] = deploy_best(client, daemon, doc, kernel=kernel, say=narrate)
        finally:
            client.close()  # the loop closed it; the hand-off's calls opened it again
    return doc


def in_process_client(call_log: Path | None = None, guest_files: GuestExtras | None = None) -> Any:
    """A SchedCP server in this process, reached over the MCP SDK's in-memory transport; `guest_files`
    (the user's --with) go into every testbed's guest."""
    from schedcp.agent.client import SchedcpClient
    from schedcp.server.app import build_server
    from schedcp.services.state import ServerOptions, ServerState

    state = ServerState(ServerOptions(call_log=call_log, guest_files=guest_files))
    return SchedcpClient.in_memory(build_server(state), state)
