"""Issue 25 benchmark: `devbox backup` and `devbox restore` of a home with many small files
against the same `tar | zstd` pipeline run by hand on the same volume.

    python -m benchmarks.backup --size 2g --file-size 16k --repeats 3    # the docs/benchmarks.md row

One host on the local engine (image devbox-test/bookworm:base, from scripts/engine.sh); its home
gets ``--size`` of base64 text in files of ``--file-size`` (2 GiB in 16 KiB files: 131072 files).
Each repeat times both sides, in alternating order:
- backup: `devbox backup master --to DIR` (pause, sizes, copy, verify, rename) against
  `docker run --rm --log-driver none -v VOLUME:/v:ro IMAGE tar -C /v -cf - . | zstd -q -o FILE`
  (and the same with the engine's default log driver, which keeps its own copy of all the
  container writes to stdout: the pipeline as most people type it);
- restore: both sides into the host's own volume, emptied by the same `devbox down --volumes`
  (then `sync`) just before: the restore phase of `devbox restore ARCHIVE` (verify, extract,
  check; the time it prints, the host's start and login after it are left out) against
  `zstd -dc FILE | docker run -i --rm -v VOLUME:/v IMAGE tar -C /v -xf -`. Removing 131072
  files leaves this machine's disk slow for tens of seconds; a fresh scratch volume on the hand
  side (before 2026-12-03) billed that to devbox alone.
Prints a markdown row per side and the ratios (against the --log-driver none pipeline); exits 1
when a command fails.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "devbox-test/bookworm:base"


def _run(argv: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def _shell(command: str, cwd: Path) -> float:
    started = time.monotonic()
    _run(["bash", "-o", "pipefail", "-c", command], cwd)
    return time.monotonic() - started


def _bytes(text: str) -> int:
    """2g -> 2147483648 (head and split take K, M, G in capitals only)."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(text[:-1]) * units[text[-1].lower()] if text[-1].lower() in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2g", help="How much data the home gets (head -c size).")
    parser.add_argument("--file-size", default="16k", help="Size of each file (split -b size).")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devbox-bench-backup-"))
    project = f"bench-backup-{int(time.time())}"
    (work / "devbox.yaml").write_text(
        f"project: {project}\nimage: {{base: '{IMAGE}'}}\nhosts:\n  master: {{ssh_port: 47999}}\n")
    devbox = [sys.executable, "-m", "devbox"]
    volume = f"{project}_master-home"
    try:
        _run([*devbox, "up"], work)
        image = _run(["docker", "inspect", "-f", "{{.Image}}", f"{project}-master-1"], work).stdout.strip()
        _run([*devbox, "exec", "--root", "master", "--", "sh", "-c",
              f"set -e; mkdir /home/developer/many; head -c {_bytes(args.size)} /dev/urandom | base64 -w 76 | "
              f"head -c {_bytes(args.size)} | split -b {_bytes(args.file_size)} -a 6 - /home/developer/many/f; "
              "chown -R developer:developer /home/developer/many"], work)  # fmt: skip
        files = _run([*devbox, "exec", "master", "--", "sh", "-c", "ls /home/developer/many | wc -l"], work).stdout
        if not int(files):
            sys.exit("the home was not filled")
        times: dict[str, list[float]] = {"devbox backup": [], "tar | zstd": [], "tar | zstd, default log driver": [],
                                         "devbox restore": [], "zstd -d | tar -x": []}  # fmt: skip
        for repeat in range(args.repeats):
            out = work / f"out{repeat}"
            out.mkdir()
            hand = f"docker run --rm --network none --log-driver none -v {volume}:/v:ro --entrypoint tar {image} " \
                   f"-C /v -cf - . | zstd -q -o {out}/hand.tar.zst"  # fmt: skip
            logged = hand.replace(" --log-driver none", "").replace("hand.tar.zst", "logged.tar.zst")
            for side in (("devbox", "hand", "logged") if repeat % 2 == 0 else ("logged", "hand", "devbox")):
                if side == "devbox":
                    started = time.monotonic()
                    _run([*devbox, "backup", "master", "--to", str(out)], work)
                    times["devbox backup"].append(time.monotonic() - started)
                elif side == "hand":
                    times["tar | zstd"].append(_shell(hand, work))
                else:
                    times["tar | zstd, default log driver"].append(_shell(logged, work))
            (out / "logged.tar.zst").unlink()
            archive = next(p for p in out.iterdir() if p.name.startswith(project))
            for side in (("devbox", "hand") if repeat % 2 == 0 else ("hand", "devbox")):
                # Both sides restore into the host's emptied volume right after the same `down
                # --volumes`: removing 131072 files leaves this disk slow for a while, which a
                # scratch volume on the hand side (as before) billed to devbox alone.
                _run([*devbox, "down", "--volumes", "--yes"], work)
                _run(["sync"], work)
                if side == "devbox":
                    said = _run([*devbox, "restore", str(archive)], work).stdout
                    found = re.search(r"restored .* in ([0-9.]+) s", said)
                    if not found:
                        sys.exit(f"no restore time in: {said}")
                    times["devbox restore"].append(float(found.group(1)))
                else:
                    _run(["docker", "volume", "create", "--label", f"com.docker.compose.project={project}",
                          "--label", "com.docker.compose.volume=master-home", volume], work)  # fmt: skip
                    times["zstd -d | tar -x"].append(_shell(
                        f"zstd -dc {out}/hand.tar.zst | docker run -i --rm --network none -v {volume}:/v "
                        f"--entrypoint tar {image} -C /v -xf -", work))  # fmt: skip
            _run([*devbox, "up"], work)  # the host again, on what the last side restored, for the next backups
            shutil.rmtree(out)
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"home: {args.size} in {files.strip()} files of {args.file_size}, {args.repeats} repeats")
        for name, values in times.items():
            print(f"{name}: median {median[name]:.2f} s ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"| backup {args.size} home, {files.strip()} files, <= 1.25 x `tar \\| zstd` (--log-driver none) | "
              f"{median['devbox backup'] / median['tar | zstd']:.2f} x ({median['devbox backup']:.1f} s vs "
              f"{median['tar | zstd']:.1f} s) |")
        print(f"| backup {args.size} home, {files.strip()} files, vs `tar \\| zstd` (default log driver) | "
              f"{median['devbox backup'] / median['tar | zstd, default log driver']:.2f} x "
              f"({median['devbox backup']:.1f} s vs {median['tar | zstd, default log driver']:.1f} s) |")
        print(f"| restore {args.size} home, {files.strip()} files, into empty volumes, <= 1.25 x "
              f"`zstd -d \\| tar -x` | "
              f"{median['devbox restore'] / median['zstd -d | tar -x']:.2f} x ({median['devbox restore']:.1f} s vs "
              f"{median['zstd -d | tar -x']:.1f} s) |")
    finally:
        subprocess.run([*devbox, "down", "--volumes", "--yes"], cwd=work, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
