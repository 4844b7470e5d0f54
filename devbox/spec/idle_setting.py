"""The ``idle`` setting: a host's idle policy (see devbox.idle for what it means).

``idle: {after: 24h, gpu_below: 5, cpu_below: 10, warn: 1h}``, in a host or in ``defaults``;
``idle: off`` (or false) in a host turns off a policy it would take from ``defaults``. Read whole,
not merged key by key: a host's policy is the one written for it.
"""

from __future__ import annotations

from typing import Any

from devbox.idle import DEFAULT_CPU_BELOW, DEFAULT_GPU_BELOW, DEFAULT_WARN, MIN_AFTER, IdlePolicy, parse_duration
from devbox.spec.options import Option, Reading, Schema, join, type_name

DURATION_HELP = "a duration such as 24h, 90m, 1h30m or 2d (units s, m, h, d)"
KEYS = ("after", "gpu_below", "cpu_below", "warn")
_DURATION_PATTERN = r"^\s*([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?\s*$"


class IdleSetting(Option):
    """An idle policy, or off (None)."""

    def read(self, value: Any, path: str, reading: Reading) -> IdlePolicy | None:
        if value is None or value is False or value == "off":
            return None
        if not isinstance(value, dict):
            reading.add(path, f"must be a mapping such as {{after: 24h}} or off, not {type_name(value)}")
            return None
        for key in value:
            if key not in KEYS:
                reading.add(join(path, str(key)), f"unknown key (known keys: {', '.join(KEYS)})")
        if "after" not in value:
            reading.add(join(path, "after"), "missing (how long a host must be idle before it is stopped, e.g. 24h)")
            return None
        after = _duration(value["after"], join(path, "after"), reading)
        if after is not None and after < MIN_AFTER:
            reading.add(join(path, "after"), f"{value['after']!r} is too short (at least 1m)")
            after = None
        warn = _duration(value.get("warn", "1h"), join(path, "warn"), reading) if "warn" in value else None
        if after is not None and warn is not None and warn > after:
            reading.add(join(path, "warn"), f"{value['warn']!r} is longer than after ({value['after']}): "
                        "warn at most that long before the stop")  # fmt: skip
        gpu = _percent(value.get("gpu_below", DEFAULT_GPU_BELOW), join(path, "gpu_below"), reading)
        cpu = _percent(value.get("cpu_below", DEFAULT_CPU_BELOW), join(path, "cpu_below"), reading)
        if after is None or gpu is None or cpu is None or (warn is None and "warn" in value):
            return None
        text = ", ".join(f"{key}: {value[key]}" for key in KEYS if key in value)
        return IdlePolicy(after, gpu, cpu, min(after, DEFAULT_WARN) if warn is None else warn, text=text)

    def schema(self) -> Schema:
        duration = {"type": "string", "pattern": _DURATION_PATTERN}
        percent = {"type": "number", "minimum": 0, "maximum": 100}
        return {"anyOf": [
            {"type": "object", "required": ["after"], "additionalProperties": False,
             "properties": {"after": duration, "warn": duration, "gpu_below": percent, "cpu_below": percent}},
            {"enum": ["off", False, None]},
        ]}  # fmt: skip


def _duration(value: Any, path: str, reading: Reading) -> float | None:
    seconds = parse_duration(value) if isinstance(value, str) else None
    if seconds is None:
        reading.add(path, f"{value!r} is not {DURATION_HELP}")
    return seconds


def _percent(value: Any, path: str, reading: Reading) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        reading.add(path, f"{value!r} is not a percentage (a number from 0 to 100)")
        return None
    return float(value)
