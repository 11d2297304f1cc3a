"""What the benchmarks share: the machine they ran on, and running the `dcgan` command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dcgan(*args: object, threads: int | None = None) -> str:
    """Run `dcgan ARGS` in this interpreter, on `threads` CPU threads; its stdout (exits with its stderr on failure)."""
    command = [sys.executable, "-m", "dcgan", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def write_report(report: dict, table: str, *, json_path: Path | None, markdown_path: Path | None) -> None:
    """Write a benchmark's report as JSON and its table as markdown, where the paths are given."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(table.rstrip("\n") + "\n")
