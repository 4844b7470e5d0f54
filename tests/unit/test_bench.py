"""The benchmark's pure parts: seed 001's files as users write them, the sides, the report."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `benchmarks` is a folder of the repository, not of the package

from benchmarks import report  # noqa: E402
from benchmarks.stacks import (  # noqa: E402
    BASE_IMAGE,
    EDIT_PACKAGE,
    EDITS,
    SEED_PACKAGES,
    BaselineStack,
    DevboxStack,
    SeedStack,
    edit_facts,
    seed_dockerfile,
)


def test_the_devbox_side_of_today_installs_what_seed_001_installs():
    seed = (REPO / "tests" / "reference" / "seed-001.Dockerfile").read_text().split()
    assert all(package in seed for package in (*SEED_PACKAGES, "openssh-server", "sudo", "zsh"))


def test_seed_dockerfile_is_the_articles_but_for_the_base_and_the_docker_step():
    seed = (REPO / "tests" / "reference" / "seed-001.Dockerfile").read_text()
    ours = seed_dockerfile("Bench/run-1")
    assert ours.splitlines()[1] == f"FROM {BASE_IMAGE}"
    assert "ENV TZ=Bench/run-1" in ours
    assert "docker-ce-cli" not in ours and "apt-key" not in ours
    # every other line as the article writes it: two apt updates, gnupg, the packages, root login
    docker_step = seed[seed.rindex("RUN ", 0, seed.index("apt-transport-https")):seed.index("COPY entrypoint.sh")]
    expected = seed.replace(docker_step, "").replace("FROM nvidia/cuda:12.6.3-cudnn-devel-ubuntu20.04",
                                                     f"FROM {BASE_IMAGE}").replace("ENV TZ=UTC", "ENV TZ=Bench/run-1")
    assert ours == expected
    assert ours.count("apt update") == 2 and "gnupg" in ours and "PermitRootLogin yes" in ours


def test_only_the_comparison_sides_are_measured_cold_only(tmp_path):
    def made(kind, **extra):
        return kind("side", 2, "project", 15000, tmp_path, tmp_path, **extra)

    assert made(SeedStack).cold_only
    assert not made(BaselineStack).cold_only and not made(DevboxStack).cold_only
    assert made(DevboxStack, cold_only=True).cold_only


def test_the_cold_verdict_is_against_seed_001s_own_files_and_names_the_shared_recipe_baseline():
    samples = [
        {"metric": "cold", "side": side, "n": 8, "value": value}
        for side, value in (("devbox", 10.0), ("baseline", 10.0), ("devbox-seed", 18.0), ("seed", 24.0))
    ]
    cold = next(v for v in report.verdicts(report.group(samples), [8]) if v.key == "cold")
    assert not cold.met and cold.measured.startswith("0.75 x (18.0 s vs 24.0 s)")
    assert "baseline sharing devbox's recipe 1.00 x" in cold.measured
    table = report.results_table(report.group(samples), [8])
    assert "| cold up, seed 001's packages: devbox vs seed 001's own files | 8 | 18.0 s | 24.0 s | 0.75 | 1/1 |" in table


def test_issue_18_targets_are_ratios_measured_in_the_same_run():
    values = {
        ("cold", "devbox", 1): 7.0, ("cold", "devbox", 8): 8.0, ("edit", "devbox", 8): 2.0,
        ("ps", "compose", 8): 0.15, ("status", "devbox", 8): 0.25, ("exec", "devbox", 8): 0.35,
        ("ssh", "devbox", 8): 0.1, ("warm", "devbox", 8): 0.5, ("up_noop", "compose", 8): 0.15,
        ("cold", "devbox", 32): 10.0, ("warm", "devbox", 32): 0.9, ("status", "devbox", 32): 0.4,
        ("idle_rss", "devbox", 32): 2 * 1024**2,
    }  # fmt: skip
    samples = [{"metric": m, "side": s, "n": n, "value": v} for (m, s, n), v in values.items()]
    found = {v.key: v for v in report.verdicts(report.group(samples), [1, 8], [16, 32])}
    assert found["edit"].met and found["edit"].measured.startswith("0.25 x")
    assert found["latency-status"].met and not found["latency-exec"].met and found["latency-ssh"].met
    assert not found["warm"].met and "1.11 x the target ratio" in found["warm"].miss
    assert found["scale-cold"].met and found["scale-warm"].met and not found["scale-status"].met
    assert found["memory"].measured.startswith("2.0 MiB median")
    table = report.results_table(report.group(samples), [1, 8, 16, 32])
    assert "| `devbox status` vs `docker compose ps` | 8 | 0.25 s | 0.15 s | 1.67 | 1/1 |" in table
    assert "| idle host: container RSS (sshd waiting) | 32 | 2.0 MiB | - | - | 1/0 |" in table


def test_edits_change_init_packages_and_put_the_spec_back(tmp_path, monkeypatch):
    stack = DevboxStack("devbox", 2, "project", 15000, tmp_path, tmp_path)
    stack.prepare()
    original = stack.spec_path.read_text()
    seen = []
    monkeypatch.setattr(DevboxStack, "_up", lambda self, name: seen.append((name, self.spec_path.read_text())))
    for metric, change in EDITS:
        stack.edit(metric, change(stack.packages))
    stack.edit("edit_pip", stack.packages, ("six",))
    assert "packages: [bc, net-tools," in seen[0][1] and "curl, tree, wget" in seen[1][1]
    assert f"python3-pip, {EDIT_PACKAGE}]" in seen[2][1] and "wget" not in seen[3][1]
    assert "pip_requirements: requirements.txt" in seen[4][1] and (tmp_path / "requirements.txt").read_text() == "six\n"
    stack.put_back()
    assert stack.spec_path.read_text() == original


def test_edit_facts_count_list_fetches_and_cached_steps():
    log = "\n".join([
        "#5 [h0 stage-0 2/4] RUN --mount=type=cache,id=x rm -f /etc/apt/sources.list.d/cuda*.list",
        "#5 CACHED",
        "#6 [h0 stage-0 3/4] RUN --mount=type=cache,id=x set -- less jq",
        "#6 0.360 Reading package lists...",
        "#6 2.083 Get:1 http://deb.debian.org/debian bookworm/main amd64 jq amd64 1.6-2.1 [135 kB]",
        "#6 DONE 3.1s",
    ])  # fmt: skip
    assert edit_facts(log) == {"lists_fetched": 0, "cached_steps": 1, "run_steps": 1}
    fetched = log + "\n#6 4.1 Get:2 http://deb.debian.org/debian bookworm InRelease [151 kB]"
    assert edit_facts(fetched)["lists_fetched"] == 1
