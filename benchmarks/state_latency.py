"""bench_state.py `--latency`: bench_latency.py (no `state_dir`: the scrape-latency benchmark
as it is) on a base commit and on this tree, one after the other, both tables kept.

The base is checked out with `git worktree add` next to this repository and removed after;
both run with this interpreter (the virtualenv), each from its own tree, so each imports
and starts its own `exporter`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_latency import ROOT

WORKTREE = Path("/tmp/h13-base")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _bench(root: Path, quick: bool) -> str:
    command = [sys.executable, str(root / "benchmarks" / "bench_latency.py")]
    if quick:
        command += ["--records", "20000", "--duration", "20"]
    check = subprocess.run([sys.executable, "-c", "import exporter; print(exporter.__file__)"],
                           cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    if not check.startswith(str(root)):
        raise SystemExit(f"from {root}, `exporter` is imported from {check}")
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"bench_latency.py failed ({done.returncode}):\n```\n{done.stderr[-2000:]}\n```"
    text = done.stdout
    return text[text.find("started at"):].strip() if "started at" in text else text.strip()


def latency_section(out: Any, base: str, quick: bool) -> None:
    base_commit = _git("rev-parse", "--short", base)
    if WORKTREE.exists():
        _git("worktree", "remove", "--force", str(WORKTREE))
    _git("worktree", "add", "--detach", str(WORKTREE), base_commit)
    try:
        print(f"  bench_latency.py on the base {base_commit} ...", flush=True)
        before = _bench(WORKTREE, quick)
        print("  bench_latency.py on this tree ...", flush=True)
        now = _bench(ROOT, quick)
    finally:
        _git("worktree", "remove", "--force", str(WORKTREE))
    out(f"\n### The scrape-latency benchmark (bench_latency.py, no state_dir): base {base_commit}, "
        "then this tree, one after the other\n")
    out(f"#### base {base_commit}\n\n{before}\n")
    out(f"#### this tree\n\n{now}")
