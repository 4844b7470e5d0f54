"""The benchmark's pure parts: seed 001's files as users write them, the sides, the report."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `benchmarks` is a folder of the repository, not of the package

from benchmarks import report  # noqa: E402
from benchmarks.stacks import (  # noqa: E402
    BASE_IMAGE,
    SEED_PACKAGES,
    BaselineStack,
    ClassicStack,
    DevboxStack,
    SeedStack,
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

    assert made(ClassicStack).cold_only and made(SeedStack).cold_only
    assert not made(BaselineStack).cold_only and not made(DevboxStack).cold_only
    assert made(DevboxStack, cold_only=True).cold_only


def test_the_cold_verdict_names_every_baseline_measured():
    samples = [
        {"metric": "cold", "side": side, "n": 8, "value": value}
        for side, value in (("devbox", 10.0), ("baseline", 10.0), ("classic", 40.0), ("devbox-seed", 18.0), ("seed", 24.0))
    ]
    cold = next(v for v in report.verdicts(report.group(samples), [8]) if v.key == "cold")
    assert not cold.met and cold.measured.startswith("1.00 x (10.0 s vs 10.0 s)")
    assert "classic-builder baseline 0.25 x" in cold.measured
    assert "vs seed 001's own files 0.75 x (18.0 s vs 24.0 s)" in cold.measured
    table = report.results_table(report.group(samples), [8])
    assert "| cold up, seed 001's packages: devbox vs seed 001's own files | 8 | 18.0 s | 24.0 s | 0.75 | 1/1 |" in table
