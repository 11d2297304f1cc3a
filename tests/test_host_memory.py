"""Freed host memory kept for reuse: what a freed block does to the resident memory of a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from dcgan.host_memory import keep_freed_host_memory

# Two 40 MiB tensors (a training step's activations are blocks of this size) made, then freed: the
# resident memory each time. By default glibc maps every block over 32 MiB on its own and unmaps it
# when it is freed, so the next step faults its pages in again; kept, they stay with the process.
FREE_BLOCKS = """
import json, torch
from dcgan.host_memory import keep_freed_host_memory

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

kept = keep_freed_host_memory()
blocks = [torch.ones(10 * 2**20) for _ in range(2)]
holding = resident_mib()
del blocks
print(json.dumps({"kept": kept, "released_mib": holding - resident_mib()}))
"""
BLOCKS_MIB = 80

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")


def free_blocks(**environment: str) -> dict:
    """Whether FREE_BLOCKS kept freed memory, and the MiB freeing its blocks gave back, in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    result = subprocess.run([sys.executable, "-c", FREE_BLOCKS], env={**clean, **environment}, capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


@glibc
def test_freed_blocks_stay_with_the_process():
    kept = free_blocks()
    assert kept["kept"] is True
    assert kept["released_mib"] < BLOCKS_MIB / 10


@glibc
def test_opting_out_leaves_glibc_returning_freed_blocks():
    returned = free_blocks(DCGAN_KEEP_FREED_MEMORY="0")
    assert returned["kept"] is False
    assert returned["released_mib"] > BLOCKS_MIB * 0.9  # the control: by default the kernel gets them back


@pytest.mark.parametrize("environment", [{"DCGAN_KEEP_FREED_MEMORY": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                         {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}])
def test_a_users_malloc_settings_are_left_alone(monkeypatch, environment):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert keep_freed_host_memory() is False


def test_the_command_line_keeps_freed_memory_before_it_runs_a_command(monkeypatch, tmp_path, capsys):
    import dcgan.cli

    calls = []
    monkeypatch.setattr(dcgan.cli, "keep_freed_host_memory", lambda: calls.append("kept"))
    code = dcgan.cli.main(["generate", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")])
    assert code == 2 and "missing.pt" in capsys.readouterr().err  # the command ran, and failed as it should
    assert calls == ["kept"]
