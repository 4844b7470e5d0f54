"""`devbox usage`: what the watcher's samples say per host, as a table, JSON or one HTML page.

Pure over the samples and events (devbox.idle_files reads them): GPU hours held (running with
GPUs of its own) and used (GPU at or above the policy's gpu_below), idle hours, the last time an
SSH session was open, how often the host was stopped for being idle, and the disk it last took. The HTML page is one
self-contained file (inline CSS and SVG, no script, no network): a timeline per host of GPU and
CPU use with its idle spans.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from devbox.idle import GAP_FACTOR, IdlePolicy, Sample, busy_reasons


def summarise(samples: Mapping[str, Sequence[Sample]], events: Sequence[Mapping[str, Any]],
              hosts: Mapping[str, Mapping[str, Any]], interval: float) -> list[dict[str, Any]]:  # fmt: skip
    """Per host (those with a policy, then any others sampled): hours held, used and idle, the
    last login, reclaims. Each sample stands for the time to the next one (at most a gap)."""
    rows = []
    for name in sorted(set(hosts) | set(samples)):
        series = sorted(samples.get(name, []), key=lambda s: s.at)
        policy = IdlePolicy.from_dict(hosts[name]["policy"]) if name in hosts else IdlePolicy(after=86400)
        gpus = len((hosts.get(name) or {}).get("gpus") or [])
        held = used = idle = 0.0
        for sample, span in zip(series, _spans(series, interval), strict=True):
            if not sample.running:
                continue
            held += span * gpus
            if sample.gpu_percent is not None and sample.gpu_percent >= policy.gpu_below:
                used += span * max(1, gpus)
            if not busy_reasons(sample, policy):
                idle += span
        logins = [s.at for s in series if s.ssh_sessions > 0]
        disks = [s.disk_mib for s in series if s.disk_mib is not None]
        rows.append({"host": name, "gpus": gpus, "gpu_hours_held": round(held / 3600, 2),
                     "gpu_hours_used": round(used / 3600, 2), "idle_hours": round(idle / 3600, 2),
                     "last_login": max(logins) if logins else None,
                     "reclaims": sum(1 for e in events if e.get("host") == name and e.get("event") == "reclaimed"),
                     "disk_mib": disks[-1] if disks else None, "samples": len(series)})  # fmt: skip
    return rows


def _spans(series: Sequence[Sample], interval: float) -> list[float]:
    """How long each sample stands for: to the next sample, a gap counting as one interval."""
    spans = []
    for sample, following in zip(series, [*series[1:], None], strict=True):
        step = (following.at - sample.at) if following is not None else interval
        spans.append(step if step <= GAP_FACTOR * interval else interval)
    return spans


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "-"


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    head = ["HOST", "GPUS", "GPU-H HELD", "GPU-H USED", "IDLE H", "LAST LOGIN", "RECLAIMS", "DISK"]
    return [head] + [[r["host"], str(r["gpus"]), f"{r['gpu_hours_held']:g}", f"{r['gpu_hours_used']:g}",
                      f"{r['idle_hours']:g}", _when(r["last_login"]), str(r["reclaims"]), _size(r.get("disk_mib"))]
                     for r in rows]  # fmt: skip


def _size(mib: float | None) -> str:
    """The latest disk reading: ``850M``, ``12.5G``; ``-`` when none was read."""
    if mib is None:
        return "-"
    return f"{mib / 1024:.1f}G" if mib >= 1024 else f"{mib:.0f}M"


WIDTH, LANE = 900, 36


def html_page(project: str, rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Sequence[Sample]],
              hosts: Mapping[str, Mapping[str, Any]], since: float, now: float, interval: float) -> str:  # fmt: skip
    """One self-contained page: the summary table and, per host, a timeline (SVG) of GPU use
    (bars), CPU use (a line) and idle spans (shaded)."""
    span = max(1.0, now - since)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>devbox usage: {_e(project)}</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
             "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}.timeline{margin:1.5em 0}"
             "svg{background:#fafafa;border:1px solid #ccc}.legend span{margin-right:1.5em}</style></head><body>",
             f"<h1>devbox usage: {_e(project)}</h1><p>{_e(_when(since))} to {_e(_when(now))}</p>",
             "<p class='legend'><span style='color:#2b7bb9'>&#9632; GPU %</span><span style='color:#d9822b'>"
             "&#9473; CPU % of one core</span><span style='color:#999'>&#9632; idle</span>"
             "<span style='color:#c33'>&#9632; stopped</span></p><table><tr>"]  # fmt: skip
    table = table_rows(rows)
    parts.append("".join(f"<th>{_e(cell)}</th>" for cell in table[0]) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in table[1:]]
    parts.append("</table>")
    for row in rows:
        name = row["host"]
        series = sorted(samples.get(name, []), key=lambda s: s.at)
        policy = IdlePolicy.from_dict(hosts[name]["policy"]) if name in hosts else IdlePolicy(after=86400)
        parts.append(f"<section class='timeline' data-host='{_e(name)}'><h2>{_e(name)}</h2>"
                     f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{LANE * 2 + 20}' "
                     f"role='img' aria-label='timeline of {_e(name)}'>")  # fmt: skip
        points = []
        for sample, step in zip(series, _spans(series, interval), strict=True):
            x, w = WIDTH * (sample.at - since) / span, max(1.0, WIDTH * step / span)
            if not sample.running:
                parts.append(f"<rect class='stopped' x='{x:.1f}' y='0' width='{w:.1f}' height='{LANE * 2}' "
                             "fill='#f3c4c4'/>")  # fmt: skip
                continue
            if not busy_reasons(sample, policy):
                parts.append(f"<rect class='idle' x='{x:.1f}' y='0' width='{w:.1f}' height='{LANE * 2}' "
                             "fill='#e4e4e4'/>")  # fmt: skip
            gpu = min(100.0, sample.gpu_percent or 0.0)
            if gpu:
                parts.append(f"<rect class='gpu' x='{x:.1f}' y='{LANE * (1 - gpu / 100):.1f}' width='{w:.1f}' "
                             f"height='{LANE * gpu / 100:.1f}' fill='#2b7bb9'/>")  # fmt: skip
            cpu = min(100.0, sample.cpu_percent)
            points.append(f"{x:.1f},{LANE * 2 - LANE * cpu / 100:.1f}")
        if points:
            parts.append(f"<polyline class='cpu' points='{' '.join(points)}' fill='none' stroke='#d9822b' "
                         "stroke-width='1.5'/>")  # fmt: skip
        parts.append(f"<text x='4' y='{LANE * 2 + 15}' font-size='11'>GPU (top) / CPU (bottom); "
                     f"{row['samples']} samples</text></svg></section>")  # fmt: skip
    parts.append("</body></html>\n")
    return "".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
