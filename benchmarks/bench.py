"""Issues 6 and 18 benchmark: `devbox up` and the daily loop against compose baselines on the local engine.

    python benchmarks/bench.py --hosts 2 --repeats 1 --smoke     # CI smoke test, N=2, < 3 min
    python benchmarks/bench.py --hosts 1,2,4,8 --repeats 3 --devbox-ref HEAD   # full run, ~25 min,
                                                                 # writes docs/benchmarks.md

First `devbox render` of 100 hosts and `devbox --help`. Then per host count N, each repeat measures
one side then the other (the order alternates, so neither always runs on a warmer machine): a cold
up (its images removed and BuildKit's cache pruned just before), warm ups (nothing changed), and
container start -> sshd banner -> first SSH login per host. On the devbox side, with the stack
running, also: command latency (`devbox status`, `devbox exec`, `devbox ssh` up to its exec of
ssh) against `docker compose ps` and `docker compose up -d` with nothing to do, each host's idle
memory, and edit -> ready (one package added to the spec, `devbox up` until every login). Then
seed 001's own files against devbox at the largest N, and devbox alone at the --scale host counts
(default 16, 32). Raw samples and logs go to benchmarks/results/ (gitignored).

Exits non-zero when any step fails (a command's exit code, a login that never succeeds, a smoke
invariant); missed targets are reported, and fail the run only with --check-targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `devbox` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if os.environ.get("DEVBOX_BENCH_SRC"):  # --devbox-ref: this process measures a snapshot
    from benchmarks.pinned import pin

    pin(os.environ["DEVBOX_BENCH_SRC"])

from benchmarks import report  # noqa: E402
from benchmarks.measure import run_timed  # noqa: E402
from benchmarks.pinned import ENV as PINNED_ENV  # noqa: E402
from benchmarks.stacks import (  # noqa: E402
    EDIT_PACKAGE,
    EDIT_REQUIREMENT,
    EDITS,
    LIMITS,
    ONE_PACKAGE,
    REQUIREMENTS,
    SEED_PACKAGES,
    BaselineStack,
    BenchError,
    DevboxStack,
    SeedStack,
    Stack,
    apt_fetch_seconds,
    cached_run_steps,
    check,
    devbox_command,
    edit_facts,
    idle_memory,
    image_facts,
    prune_build_cache,
    run_text,
    spec_text,
)

ROOT = Path(__file__).resolve().parent.parent
RENDER_HOSTS = 100
# The floors under devbox's commands, in the interpreter devbox runs on: the Docker SDK imported
# as devbox imports it (without its SSH transport) and one engine call, under `status` and
# `exec`; that and paramiko's import, under a warm `up` (which logs in). What a command takes
# beyond its floor is devbox's own share.
# Both end as devbox's commands do, without the interpreter's teardown (devbox.cli.main).
SDK_FLOOR = (sys.executable, "-c", "import os; from devbox.docker_api import sdk; sdk().from_env().ping(); os._exit(0)")
LOGIN_FLOOR = (sys.executable, "-c", "import os; from devbox import docker_api, probe; docker_api.sdk().from_env()"
               ".ping(); probe._paramiko(); os._exit(0)")  # fmt: skip
LATENCY_ROUNDS = 5  # command latency: rounds of (compose ps, status, exec, ssh, compose up -d) per repeat
TODAY_PORTS = 700  # the "today" sides' ports: --devbox-port / --baseline-port + this
SLOW_APT_SECONDS = 10  # the mirror usually serves the package lists in 1-2 s


@dataclass
class Run:
    """One benchmark session: its options, engine client, folders and everything measured."""

    args: argparse.Namespace
    client: Any
    rid: str = field(default_factory=lambda: secrets.token_hex(2))
    samples: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, Any] = field(default_factory=dict)
    disturbance: list[dict[str, Any]] = field(default_factory=list)
    stacks: list[Stack] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def folder(self) -> Path:
        return self.args.results / self.args.stamp

    def add(self, metric: str, side: str, n: int, value: float, **extra: Any) -> None:
        self.samples.append({"metric": metric, "side": side, "n": n, "value": value, **extra})

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="host counts N, comma-separated [full: 1,2,4,8; smoke: 2]")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="cold runs per side and N [full: 3; smoke: 1]")
    parser.add_argument("--repeats-large", type=int, default=None,
                        help="cold runs per side for N >= 8 (the slowest), default: --repeats")  # fmt: skip
    parser.add_argument("--warm", type=int, default=None, help="warm ups after each cold up [full: 3; smoke: 1]")
    parser.add_argument("--smoke", action="store_true", help="CI smoke test: check invariants, write no docs")
    parser.add_argument("--scale", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                        help="host counts for devbox alone, after the comparisons [full: 16,32; smoke: -]")  # fmt: skip
    parser.add_argument("--repeats-scale", type=int, default=2, help="cold runs per --scale host count [2]")
    parser.add_argument("--no-today", dest="today", action="store_false", default=None,
                        help="skip the cold comparison with seed 001's own files at the largest N "
                             "(never run in --smoke)")  # fmt: skip
    parser.add_argument("--check-targets", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown to update")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="raw output folder")
    parser.add_argument("--report", type=Path, default=None,
                        help="measure nothing: rewrite the doc (and plot) from this raw results JSON")  # fmt: skip
    parser.add_argument("--devbox-ref", default=None,
                        help="measure devbox as committed at this git ref (e.g. HEAD), not the work tree")  # fmt: skip
    parser.add_argument("--devbox-port", type=int, default=15000, help="first SSH port of the devbox hosts")
    parser.add_argument("--baseline-port", type=int, default=16000, help="first SSH port of the baseline hosts")
    args = parser.parse_args(argv)
    args.hosts = args.hosts or ([2] if args.smoke else [1, 2, 4, 8])
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.repeats_large = args.repeats_large or args.repeats
    args.scale = [] if args.smoke else (args.scale if args.scale is not None else [16, 32])
    args.today = not args.smoke and args.today is not False
    args.warm = args.warm if args.warm is not None else (1 if args.smoke else 3)
    args.stamp = time.strftime("%Y%m%d-%H%M%S") + ("-smoke" if args.smoke else "")
    args.command = " ".join(["python", "benchmarks/bench.py", *(argv if argv is not None else sys.argv[1:])])
    return args


def repeats_for(args: argparse.Namespace, n: int) -> int:
    return args.repeats_large if n >= 8 else args.repeats


# --------------------------------------------------------------------------- preflight


def preflight(run: Run) -> str:
    """The engine answers, the base image is there, Compose v2 is found, our ports are free.

    Returns the Compose version. Never pulls: no registry is reachable.
    """
    import docker.errors

    from benchmarks.stacks import BASE_IMAGE
    from devbox.docker_api import find_compose

    try:
        import psutil  # noqa: F401 - peak memory is one of the issue's measurements
    except ImportError:
        raise BenchError("psutil is missing, so peak memory cannot be measured: "
                         "pip install -e '.[test]'") from None  # fmt: skip
    try:
        run.client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        raise BenchError(f"base image {BASE_IMAGE} is missing (run `bash scripts/engine.sh`)") from None
    top = max(run.args.hosts)
    args = run.args
    firsts = [(args.devbox_port, max([top, *args.scale])), (args.baseline_port, top),
              *([(args.devbox_port + TODAY_PORTS, top), (args.baseline_port + TODAY_PORTS, top)] if args.today else [])]
    for first, count in firsts:
        taken = [p for p in range(first, first + count) if port_taken(p)]
        if taken:
            raise BenchError(f"ports {taken} on 127.0.0.1 are taken (choose --devbox-port/--baseline-port)")
    return find_compose().version


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def note_load(run: Run, side: str, n: int) -> None:
    """What else ran on the engine at a cold start: another user's builds skew timings."""
    ours = {stack.project for stack in run.stacks}
    others = [
        c for c in run.client.containers.list()
        if c.labels.get("com.docker.compose.project") not in ours
    ]  # fmt: skip
    run.disturbance.append({"side": side, "n": n, "others": len(others), "load": os.getloadavg()[0]})


# --------------------------------------------------------------------------- phases


def clean_slate(run: Run, stacks: list[Stack]) -> None:
    """Nothing of ours running, none of our images, BuildKit cache empty: a cold start for both."""
    for stack in stacks:
        stack.down("cleanup")
        stack.remove_images(run.client)
    prune_build_cache(run.folder / "logs" / "prune.log")


def measure_side(run: Run, stack: Stack, others: list[Stack], repeat: int) -> None:
    """Cold up, then (except for the sides measured cold only, which after their build are just
    another baseline) warm ups and start-to-login, for one side at one N."""
    stack.repeat = repeat
    clean_slate(run, [stack, *others])
    facts = measure_cold(run, stack)
    if stack.side == "devbox-one":  # the one-package spec: its cold up and its edit alone
        measure_edit(run, stack)  # type: ignore[arg-type]
    elif not stack.cold_only:
        measure_running(run, stack)
    if isinstance(stack, DevboxStack) and not stack.cold_only and stack.side == "devbox":
        measure_daily(run, stack)
    stack.down()
    if run.args.smoke:
        check_invariants(stack, facts)


def measure_cold(run: Run, stack: Stack) -> dict[str, Any]:
    """One cold up, checked to be really cold; returns the facts about the images it built."""
    n, side, repeat = stack.hosts, stack.side, stack.repeat
    note_load(run, side, n)
    cold = stack.cold()
    log = stack.log("cold").read_text(encoding="utf-8", errors="replace")
    cached, apt = cached_run_steps(log), apt_fetch_seconds(log)
    if cached and run.args.smoke:
        raise BenchError(f"{stack.project}: the cold build took {cached} RUN steps from a cache")
    run.add("cold", side, n, cold.seconds, repeat=repeat, cached_steps=cached, apt_fetch_seconds=apt,
            tree_maxrss=cold.tree_maxrss)  # fmt: skip
    if cold.peak_rss:
        run.add("peak_rss", side, n, cold.peak_rss, repeat=repeat)
    run.say(f"{side:8} N={n} cold {cold.seconds:6.2f} s" + (f"  ({cached} cached RUN steps!)" if cached else ""))
    facts = image_facts(run.client, stack.image_names())
    run.images[f"{side}-{n}"] = facts
    run.add("image_count", side, n, facts["count"], repeat=repeat)
    for size in facts["sizes"]:
        run.add("image_size", side, n, size, repeat=repeat)
    return facts


def measure_running(run: Run, stack: Stack) -> None:
    """Warm ups of the running stack, then container start -> banner -> login per host."""
    n, side, repeat = stack.hosts, stack.side, stack.repeat
    for _ in range(run.args.warm):
        warm = stack.warm()
        run.add("warm", side, n, warm.seconds, repeat=repeat, peak_rss=warm.peak_rss)
        run.say(f"{side:8} N={n} warm {warm.seconds:6.2f} s")
    per_host = stack.start_to_login(run.client)
    for host, values in per_host.items():
        for metric, value in values.items():
            run.add(metric, side, n, value, repeat=repeat, host=host)
    worst = max(values["start_to_login"] for values in per_host.values())
    run.say(f"{side:8} N={n} start->login max {worst:.2f} s")


def measure_daily(run: Run, stack: DevboxStack) -> None:
    """With the devbox stack running: command latency against compose's, idle memory, and (not
    at the --scale host counts, which measure the rest) edit -> ready."""
    measure_latency(run, stack)
    measure_memory(run, stack)
    if stack.hosts not in run.args.scale:
        measure_edit(run, stack)


def measure_latency(run: Run, stack: DevboxStack) -> None:
    """Rounds of `docker compose ps`, `devbox status`, `devbox exec h0 -- true`, `devbox ssh h0 --
    true` (ssh replaced by `true`: the time devbox takes before it execs ssh) and `docker compose
    up -d` with nothing to do, interleaved so that load on the machine hits all of them alike."""
    n, repeat = stack.hosts, stack.repeat
    fake = run.folder / "fake-ssh"
    fake.mkdir(parents=True, exist_ok=True)
    if not (fake / "ssh").exists():
        (fake / "ssh").symlink_to(shutil.which("true") or "/bin/true")
    ssh_env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}
    pinned = os.environ.get(PINNED_ENV)  # the floors import devbox as the devbox side does
    floor_env = {**os.environ, "PYTHONPATH": pinned} if pinned else None
    for _ in range(2 if run.args.smoke else LATENCY_ROUNDS):
        timings = {
            ("compose", "ps"): stack.compose_command("ps", "ps"),
            ("devbox", "status"): stack.command("status", "status"),
            ("devbox", "exec"): stack.command("exec", "exec", "h0", "--", "true"),
            ("devbox", "ssh"): stack.command("ssh", "ssh", "h0", "--", "true", env=ssh_env),
            ("compose", "up_noop"): stack.compose_command("up-noop", "up", "--detach"),
            ("floor", "sdk"): check(run_timed(SDK_FLOOR, stack.log("sdk-floor"), env=floor_env), "the SDK floor"),
            ("floor", "login"): check(run_timed(LOGIN_FLOOR, stack.log("login-floor"), env=floor_env),
                                      "the login floor"),  # fmt: skip
        }
        for (side, metric), timed in timings.items():
            run.add(metric, side, n, timed.seconds, repeat=repeat, cpu=timed.cpu_seconds)
    ps, status = run.samples[-7]["value"], run.samples[-6]["value"]
    run.say(f"devbox   N={n} compose ps {ps:.2f} s, status {status:.2f} s (last round)")


def measure_memory(run: Run, stack: DevboxStack) -> None:
    """Each idle host's memory (sshd waiting for a login), once per repeat."""
    hosts = idle_memory(run.client, stack.project)
    for host in hosts:
        run.add("idle_rss", "devbox", stack.hosts, host["rss"], repeat=stack.repeat, usage=host["usage"])
        run.add("idle_usage", "devbox", stack.hosts, host["usage"], repeat=stack.repeat)
    if hosts:
        run.say(f"devbox   N={stack.hosts} idle host RSS {max(h['rss'] for h in hosts) / 1024**2:.1f} MiB max")


def measure_edit(run: Run, stack: DevboxStack) -> None:
    """Edit -> ready on the running stack, until every host logs in again: a package added at
    the start, middle and end of the list, one removed, a pip requirement added (to a spec whose
    requirements file the step before gave it); each put back before the next. Each is set
    against the cold up of the stack's own spec (the pip row's cold lacked the requirements)."""
    rows = [(metric, change(stack.packages), ()) for metric, change in EDITS]
    if stack.packages == ONE_PACKAGE:
        rows = [("edit_one", (*stack.packages, EDIT_PACKAGE), ())]
    for metric, packages, requirements in rows:
        record_edit(run, stack, metric, stack.edit(metric, packages, requirements))
        stack.put_back()
    if stack.packages != ONE_PACKAGE:
        stack.edit("pip-setup", stack.packages, REQUIREMENTS)
        record_edit(run, stack, "edit_pip", stack.edit("edit_pip", stack.packages, (*REQUIREMENTS, EDIT_REQUIREMENT)))
        stack.put_back()


def record_edit(run: Run, stack: DevboxStack, metric: str, timed: Any) -> None:
    facts = edit_facts(stack.log(metric).read_text(encoding="utf-8", errors="replace"))
    side = "devbox-one" if metric == "edit_one" else "devbox"
    run.add(metric, side, stack.hosts, timed.seconds, repeat=stack.repeat, **facts)
    run.say(f"devbox   N={stack.hosts} {metric} -> ready {timed.seconds:6.2f} s ({facts})")


def check_invariants(stack: Stack, facts: dict[str, Any]) -> None:
    """What the smoke test guarantees beyond 'nothing failed': one image for devbox, N for the
    baseline, a warm devbox up that really had nothing to do, and an edit -> ready that rebuilt
    only the packages' layer without fetching apt's lists again."""
    expected = stack.hosts if stack.side == "baseline" else 1  # devbox builds one image for any N
    if facts["count"] != expected:
        raise BenchError(f"{stack.project}: {facts['count']} images after a cold up, expected {expected}")
    if stack.side != "devbox":
        return
    if "nothing changed" not in stack.log("warm").read_text(encoding="utf-8"):
        raise BenchError(f"{stack.project}: the warm `devbox up` did work (see {stack.log('warm')})")
    edit = edit_facts(stack.log("edit").read_text(encoding="utf-8", errors="replace"))
    if edit["lists_fetched"] or edit["run_steps"] != 1 or not edit["cached_steps"]:
        raise BenchError(f"{stack.project}: edit -> ready should run one RUN step (the packages') from cached "
                         f"setup, without fetching package lists; it did {edit} (see {stack.log('edit')})")  # fmt: skip


def measure_cli(run: Run, repeat: int) -> None:
    """`devbox render` of 100 hosts (first time, then with state present) and `devbox --help`."""
    folder = run.folder / "work" / "render"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = folder / "devbox.yaml"
    spec.write_text(spec_text(f"bench-{run.rid}-render", RENDER_HOSTS, 17000), encoding="utf-8")
    render = [*devbox_command(), "-f", str(spec), "render"]
    log = run.folder / "logs" / "render.log"
    first = check(run_timed(render, log), "devbox render")
    run.add("render_100_first", "devbox", RENDER_HOSTS, first.seconds, repeat=repeat)
    again = [check(run_timed(render, log), "devbox render").seconds for _ in range(5 if run.args.smoke else 10)]
    for seconds in again:
        run.add("render_100", "devbox", RENDER_HOSTS, seconds, repeat=repeat)
    helps = [check(run_timed([*devbox_command(), "--help"], run.folder / "logs" / "help.log"), "devbox --help").seconds
             for _ in range(5 if run.args.smoke else 10)]  # fmt: skip
    for seconds in helps:
        run.add("help", "devbox", 0, seconds, repeat=repeat)
    run.say(f"render 100 hosts: first {first.seconds:.2f} s, again {min(again):.2f}-{max(again):.2f} s; "
            f"--help {min(helps):.3f}-{max(helps):.3f} s")  # fmt: skip


def stacks_for(run: Run, n: int) -> list[Stack]:
    """devbox and the baseline for one N. (The classic-builder baseline of issue 6 is gone: the
    legacy builder cannot build devbox's recipe, whose RUN steps use BuildKit cache mounts.)"""
    work, logs, rid, args = run.folder / "work", run.folder / "logs", run.rid, run.args
    stacks: list[Stack] = [
        DevboxStack("devbox", n, f"bench-{rid}-dbx-n{n}", args.devbox_port, work / f"dbx-n{n}", logs),
        BaselineStack("baseline", n, f"bench-{rid}-base-n{n}", args.baseline_port, work / f"base-n{n}", logs),
    ]
    if n == max(args.hosts):  # the one-package spec of earlier runs: its cold up and one edit
        stacks.append(DevboxStack("devbox-one", n, f"bench-{rid}-one-n{n}", args.devbox_port + TODAY_PORTS // 2,
                                  work / f"one-n{n}", logs, packages=ONE_PACKAGE))  # fmt: skip
    return prepared(run, stacks)


def scale_stacks(run: Run, n: int) -> list[Stack]:
    """devbox alone at a --scale host count: cold, warm, command latency, idle memory."""
    work, logs, rid, args = run.folder / "work", run.folder / "logs", run.rid, run.args
    stack = DevboxStack("devbox", n, f"bench-{rid}-dbx-n{n}", args.devbox_port, work / f"dbx-n{n}", logs)
    return prepared(run, [stack])


def today_stacks(run: Run, n: int) -> list[Stack]:
    """What users write today against devbox, both installing seed 001's packages (cold only)."""
    work, logs, rid, args = run.folder / "work", run.folder / "logs", run.rid, run.args
    stacks: list[Stack] = [
        DevboxStack("devbox-seed", n, f"bench-{rid}-dseed-n{n}", args.devbox_port + TODAY_PORTS, work / f"dseed-n{n}",
                    logs, packages=SEED_PACKAGES, login_shell="zsh", cold_only=True),
        SeedStack("seed", n, f"bench-{rid}-seed-n{n}", args.baseline_port + TODAY_PORTS, work / f"seed-n{n}", logs),
    ]  # fmt: skip
    return prepared(run, stacks)


def prepared(run: Run, stacks: list[Stack]) -> list[Stack]:
    """The run's sides, each with the run's own time zone (no cache from anyone else), its files
    written, and registered for the teardown."""
    for stack in stacks:
        stack.timezone = f"Bench/run-{run.rid}"
        stack.prepare()
        run.stacks.append(stack)
    return stacks


def measure_sides(run: Run, stacks: list[Stack], repeats: int) -> None:
    for repeat in range(repeats):
        shift = repeat % len(stacks)  # each side goes first in turn
        for stack in stacks[shift:] + stacks[:shift]:
            measure_side(run, stack, [s for s in stacks if s is not stack], repeat)
    clean_slate(run, stacks)


def measure_all(run: Run) -> None:
    for repeat in range(run.args.repeats):
        measure_cli(run, repeat)
    for n in run.args.hosts:
        measure_sides(run, stacks_for(run, n), repeats_for(run.args, n))
    if run.args.today:
        top = max(run.args.hosts)
        measure_sides(run, today_stacks(run, top), repeats_for(run.args, top))
    for n in run.args.scale:
        measure_sides(run, scale_stacks(run, n), run.args.repeats_scale)


def snapshot(ref: str, results: Path) -> Path:
    """``git archive`` of devbox/ at ``ref`` into results/devbox-src-<sha> (reused if present)."""
    import io
    import tarfile

    sha = run_text(["git", "-C", str(ROOT), "rev-parse", "--short", f"{ref}^{{commit}}"])
    if not sha:
        raise BenchError(f"--devbox-ref {ref}: not a commit of {ROOT}")
    folder = results / f"devbox-src-{sha}"
    if not (folder / "devbox" / "cli.py").is_file():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", sha, "devbox"],
                                 capture_output=True, check=True).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                tar.extractall(folder, filter="data")
            else:
                tar.extractall(folder)  # noqa: S202 - our own repository's archive
        # Bytecode, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set (CI, some shells)
        # every devbox command would compile its modules from source, 0.1 s of each command.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "devbox")],  # noqa: S603
                       check=True, capture_output=True)  # fmt: skip
    return folder


def devbox_commit() -> str:
    """The devbox code measured: its commit, and whether the work tree had local changes."""
    pinned = os.environ.get("DEVBOX_BENCH_SRC")
    if pinned:
        return f"{Path(pinned).name.removeprefix('devbox-src-')} (snapshot, work tree not used)"
    head = run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--", "devbox"])
    return head + (" with uncommitted changes in devbox/" if dirty else "")


def teardown(run: Run) -> None:
    """Remove every container, network, volume and image this run made; never anything else."""
    for stack in run.stacks:
        try:
            stack.down("teardown")
            stack.remove_images(run.client)
        except Exception as exc:  # keep tearing the others down
            print(f"warning: teardown of {stack.project}: {exc}", file=sys.stderr)
    shutil.rmtree(run.folder / "work", ignore_errors=True)  # generated passwords and host keys


# --------------------------------------------------------------------------- output


def results_data(run: Run, machine: dict[str, Any]) -> dict[str, Any]:
    args = run.args
    cold = [s for s in run.samples if s["metric"] == "cold"]
    return {
        "machine": machine,
        "config": {
            "hosts": args.hosts, "repeats_by_n": {n: repeats_for(args, n) for n in args.hosts},
            "scale": args.scale, "repeats_scale": args.repeats_scale,
            "warm": args.warm, "today": args.today,
            "limits": LIMITS, "smoke": args.smoke, "command": args.command,
            "minutes": (time.monotonic() - run.started) / 60,
        },
        "disturbance": {
            "others_max": max((d["others"] for d in run.disturbance), default=0),
            "load_max": max((d["load"] for d in run.disturbance), default=0.0),
            "cached_runs": sum(1 for s in cold if s.get("cached_steps")),
            "slow_apt": [
                f"{s['side']} N={s['n']} #{s['repeat']}: {s['value']:.0f} s, apt-get update {s['apt_fetch_seconds']} s"
                for s in cold if (s.get("apt_fetch_seconds") or 0) > SLOW_APT_SECONDS
            ],
            "per_cold_run": run.disturbance,
        },
        "images": run.images,
        "samples": run.samples,
    }  # fmt: skip


def publish(run: Run, data: dict[str, Any]) -> list[report.Verdict]:
    """Raw JSON always; the table on stdout; docs/benchmarks.md (and its plot) on full runs."""
    raw = run.args.results / f"{run.args.stamp}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(data, indent=1), encoding="utf-8")
    groups = report.group(data["samples"])
    verdicts = report.verdicts(groups, run.args.hosts, run.args.scale)
    print(report.results_table(groups, [*run.args.hosts, *run.args.scale]))
    print(report.verdict_table(verdicts))
    print(f"raw results: {raw}")
    if not run.args.smoke:
        publish_doc(run.args.doc, data)
    return verdicts


def publish_doc(doc: Path, data: dict[str, Any]) -> None:
    image = doc.with_suffix(".png")
    plotted = report.plot(data, image)
    report.write_doc(doc, report.generated_block(data, image.name if plotted else None))
    print(f"wrote {doc}" + (f" and {image}" if plotted else ""))


def main(argv: list[str] | None = None) -> int:
    from devbox.docker_api import connect
    from devbox.errors import DevboxError

    args = parse_args(argv)
    if args.report:
        publish_doc(args.doc, json.loads(args.report.read_text(encoding="utf-8")))
        return 0
    if args.devbox_ref and not os.environ.get("DEVBOX_BENCH_SRC"):
        # Start over pinned: this process has imported the work tree's devbox already.
        try:
            os.environ["DEVBOX_BENCH_SRC"] = str(snapshot(args.devbox_ref, args.results))
        except (BenchError, OSError, subprocess.CalledProcessError) as exc:
            print(f"bench: FAILED: {exc}", file=sys.stderr)
            return 1
        argv = argv if argv is not None else sys.argv[1:]
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])  # noqa: S606 - no shell
    # paramiko logs every refused early probe with a traceback; the results say what failed.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    try:
        client = connect()
    except DevboxError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    run = Run(args, client)
    try:
        compose_version = preflight(run)
        machine = report.machine_facts(client, compose_version)
        machine["devbox_commit"] = devbox_commit()
        run.say(f"run {run.rid}: N={args.hosts}, repeats {args.repeats} (N>=8: {args.repeats_large}), "
                f"warm {args.warm}, scale {args.scale}; logs in {run.folder / 'logs'}")  # fmt: skip
        measure_all(run)
        if devbox_commit() != machine["devbox_commit"]:  # the work tree is shared with others
            machine["devbox_commit"] += f", then {devbox_commit()} by the end of the run"
        verdicts = publish(run, results_data(run, machine))
    except (BenchError, DevboxError) as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        teardown(run)
    missed = [v for v in verdicts if not v.met]
    return 2 if args.check_targets and missed else 0


if __name__ == "__main__":
    sys.exit(main())
