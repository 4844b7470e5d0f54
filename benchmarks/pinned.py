"""Run devbox from a snapshot folder instead of the installed package.

    python benchmarks/pinned.py SNAPSHOT_FOLDER [devbox arguments...]

`bench.py --devbox-ref REF` measures the devbox of one commit even while the work tree changes
under a long run. PYTHONPATH alone cannot do that: an editable install puts a finder on
sys.meta_path that wins over sys.path, so that finder is dropped first.
"""

from __future__ import annotations

import sys

ENV = "DEVBOX_BENCH_SRC"  # set by bench.py: the snapshot folder every process must import from


def pin(folder: str) -> None:
    """Make `import devbox` load from ``folder`` (call before anything imports devbox)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path.insert(0, folder)


if __name__ == "__main__":
    pin(sys.argv[1])
    sys.argv = ["devbox", *sys.argv[2:]]
    from devbox.cli import main

    main()
