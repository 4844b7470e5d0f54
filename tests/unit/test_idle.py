"""The idle rule over sample series, with the clock passed in: every signal alone keeps a host
awake, thresholds, a gap in the samples, keep-alive; and the ``idle`` setting as validate reads it."""

from __future__ import annotations

import dataclasses

import pytest

from devbox.errors import SpecError
from devbox.idle import KEEP_FILE, IdlePolicy, Sample, decide, duration_text, parse_duration

from .helpers import make_spec

MINUTE = 60.0
POLICY = IdlePolicy(after=30 * MINUTE, gpu_below=5, cpu_below=10, warn=10 * MINUTE)
T0 = 1_800_000_000.0


def series(minutes: int, **signals) -> list[Sample]:
    """One idle sample a minute for ``minutes`` minutes from T0, each with ``signals`` set."""
    return [Sample(at=T0 + i * MINUTE, **signals) for i in range(minutes)]


def at(minute: float) -> float:
    return T0 + minute * MINUTE


def test_a_quiet_host_is_idle_then_warned_then_stopped():
    samples = series(40)
    assert decide(samples[:5], POLICY, at(4), MINUTE).action == "idle"
    warned = decide(samples[:25], POLICY, at(24), MINUTE)
    assert warned.action == "warn" and warned.idle_since == T0 and warned.stops_at == at(30)
    stop = decide(samples[:31], POLICY, at(30), MINUTE)
    assert stop.action == "stop" and "idle 30m" in stop.reason


@pytest.mark.parametrize("signal, reason", [
    ({"ssh_sessions": 1}, "1 SSH session"),
    ({"cpu_percent": 10.0}, "CPU 10%"),  # at the threshold is busy: below means below
    ({"gpu_percent": 50.0}, "GPU 50%"),
    ({"unknown": ("CPU",)}, "CPU could not be read"),
])  # fmt: skip
def test_every_signal_alone_keeps_a_host_awake(signal, reason):
    busy = series(40, **signal)
    decision = decide(busy, POLICY, at(39), MINUTE)
    assert decision.action == "busy" and reason in decision.reason


def test_below_the_thresholds_is_idle_and_gpu_memory_held_is_not_use():
    quiet = series(40, cpu_percent=9.9, gpu_percent=4.9, gpu_memory_mib=20000)
    assert decide(quiet, POLICY, at(39), MINUTE).action == "stop"
    strict = dataclasses.replace(POLICY, gpu_below=0, cpu_below=0)
    assert decide(series(40), strict, at(39), MINUTE).action == "busy"  # 0%: nothing is below 0


def test_one_busy_sample_restarts_the_idle_clock():
    samples = series(40)
    samples[20] = dataclasses.replace(samples[20], ssh_sessions=1)
    decision = decide(samples, POLICY, at(39), MINUTE)
    assert decision.action == "idle" and decision.idle_since == at(21) and decision.stops_at == at(51)


def test_a_gap_in_the_samples_restarts_the_idle_clock():
    samples = [s for s in series(40) if not 10 <= (s.at - T0) / MINUTE < 20]  # the watcher was down 10 minutes
    decision = decide(samples, POLICY, at(39), MINUTE)
    assert decision.idle_since == at(20) and decision.action == "idle"
    # a missed sample or two is not a gap
    nearly = [s for i, s in enumerate(series(40)) if i != 15]
    assert decide(nearly, POLICY, at(39), MINUTE).action == "stop"


def test_no_recent_sample_is_not_idle():
    decision = decide(series(40), POLICY, at(60), MINUTE)
    assert decision.action == "busy" and decision.reason == "no recent sample"
    assert decide([], POLICY, at(0), MINUTE).action == "busy"


def test_a_stopped_host_is_left_alone_and_its_samples_break_the_idle_run():
    samples = series(40)
    samples[-1] = dataclasses.replace(samples[-1], running=False)
    assert decide(samples, POLICY, at(39), MINUTE).action == "stopped"
    samples[-1] = dataclasses.replace(samples[-1], running=True)
    samples[30] = dataclasses.replace(samples[30], running=False)  # stopped, then brought back by `up`
    assert decide(samples, POLICY, at(39), MINUTE).idle_since == at(31)


def test_devbox_keep_holds_the_host_and_the_clock_starts_at_its_end():
    samples = series(40)
    held = decide(samples, POLICY, at(39), MINUTE, kept_until=at(45))
    assert held.action == "held" and held.held_until == at(45)
    after = decide(series(60), POLICY, at(59), MINUTE, kept_until=at(45))
    assert after.action == "idle" and after.idle_since == at(45) and after.stops_at == at(75)


def test_the_keep_file_in_the_home_holds_the_host():
    samples = series(40, keep_until=at(24 * 60))
    held = decide(samples, POLICY, at(39), MINUTE)
    assert held.action == "held" and held.held_until == at(24 * 60) and KEEP_FILE in held.reason
    expired = series(40, keep_until=at(-1))  # last changed more than a day ago
    assert decide(expired, POLICY, at(39), MINUTE).action == "stop"


def test_the_keep_file_with_another_signal_says_both():
    samples = series(40, keep_until=at(24 * 60), ssh_sessions=2)
    decision = decide(samples, POLICY, at(39), MINUTE)
    assert decision.action == "busy" and "2 SSH sessions" in decision.reason


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("2d", 172800),
                                           ("45s", 45), ("1m", 60)])  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "1x", "h", "1m1h", "-1h", "1.5h"])
def test_not_durations(text):
    assert parse_duration(text) is None


def test_duration_text():
    assert [duration_text(s) for s in (40, 60, 5400, 86400 + 3600, 82800)] == ["40s", "1m", "1h30m", "1d1h", "23h"]


# --------------------------------------------------------------------------- the setting


def test_the_idle_setting_in_defaults_and_hosts():
    spec = make_spec(defaults={"idle": {"after": "24h", "gpu_below": 5, "cpu_below": 10.5, "warn": "1h"}},
                     hosts={"master": {"ssh_port": 4432}, "worker": {"ssh_port": 4433, "idle": "off"},
                            "short": {"ssh_port": 4434, "idle": {"after": "1m"}}})  # fmt: skip
    master, worker, short = (spec.host(name).idle for name in ("master", "worker", "short"))
    assert master == IdlePolicy(86400, 5, 10.5, 3600)
    assert worker is None
    assert short == IdlePolicy(60, 5, 10, 60)  # warn defaults to 1h, at most after


def test_off_unless_set():
    assert all(host.idle is None for host in make_spec().hosts)


@pytest.mark.parametrize("idle, problem", [
    ({"after": "30s"}, "hosts.master.idle.after: '30s' is too short (at least 1m)"),
    ({"after": "1 day"}, "hosts.master.idle.after: '1 day' is not a duration"),
    ({"after": 60}, "hosts.master.idle.after: 60 is not a duration"),
    ({"warn": "1h"}, "hosts.master.idle.after: missing"),
    ({"after": "1h", "gpu_below": 101}, "hosts.master.idle.gpu_below: 101 is not a percentage"),
    ({"after": "1h", "cpu_below": "ten"}, "hosts.master.idle.cpu_below: 'ten' is not a percentage"),
    ({"after": "1h", "warn": "2h"}, "hosts.master.idle.warn: '2h' is longer than after (1h)"),
    ({"after": "1h", "afetr": "2h"}, "hosts.master.idle.afetr: unknown key"),
    ("24h", "hosts.master.idle: must be a mapping such as {after: 24h} or off"),
])  # fmt: skip
def test_bad_idle_settings_are_named_with_their_path(idle, problem):
    with pytest.raises(SpecError) as info:
        make_spec(hosts={"master": {"ssh_port": 4432, "idle": idle}})
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems
