"""Checkpoints: atomic writes, keep-K, and loading that refuses anything that is not ours."""

from __future__ import annotations

import builtins
import errno
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import dcgan.checkpoint as checkpoint
from conftest import assert_same_training_state, train_tiny_runs
from dcgan.checkpoint import FORMAT_VERSION, atomic_save, load_checkpoint, save_checkpoint
from dcgan.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_subset) -> Path:
    """A 4-step run with checkpoints every 2 steps, keeping 2 (module-wide: tests use a copy)."""
    flags = ("--checkpoint-every", "2", "--keep-checkpoints", "2")
    return train_tiny_runs(tmp_path_factory.mktemp("checkpoint"), mnist_subset, {"run": flags}, steps=4)["run"]


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run in this test's folder, free to change."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def refused(path: Path) -> str:
    """The one-line message with which load_checkpoint refuses `path`."""
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def test_atomic_save_replaces_the_file_whole(tmp_path):
    target = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(3)}, target)
    atomic_save({"a": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(3)}, target)
    before = target.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "write":  # the disk fills up half-way through the data
        real_open = builtins.open

        class HalfFile:
            def __init__(self, handle):
                self.handle = handle

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, data):
                self.handle.write(bytes(data)[: len(data) // 2])
                no_space()

        monkeypatch.setattr(checkpoint, "open", lambda *a, **k: HalfFile(real_open(*a, **k)), raising=False)
    else:
        monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_save_checkpoint_turns_a_full_disk_into_a_one_line_error(tmp_path, monkeypatch):
    save_checkpoint({"step": 1, "config": {}, "generator": {}}, tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(UserError, match=r"cannot write checkpoint .*last\.pt: No space left on device"):
        save_checkpoint({"step": 2, "config": {}, "generator": {}}, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1


def test_keep_k_keeps_the_last_k_checkpoints(run):
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000002.pt"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert load_checkpoint(run / "checkpoints" / "step_00000002.pt")["step"] == 2


def test_keep_k_rotates(tmp_path):
    for step in range(5):
        save_checkpoint({"step": step, "config": {}, "generator": {}}, tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000002.pt", "step_00000003.pt"]
    assert [load_checkpoint(tmp_path / f"step_0000000{s}.pt")["step"] for s in (2, 3)] == [2, 3]


def test_a_save_after_a_kill_between_link_and_write_leaves_no_temporary(tmp_path):
    save_checkpoint({"step": 3, "config": {}, "generator": {}}, tmp_path, keep=2)
    os.link(tmp_path / "last.pt", tmp_path / "step_00000003.pt")  # the kept copy made, then the kill
    save_checkpoint({"step": 6, "config": {}, "generator": {}}, tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000003.pt"]
    assert load_checkpoint(tmp_path / "step_00000003.pt")["step"] == 3


def test_partial_files_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    save_checkpoint({"step": 0, "config": {}, "generator": {}}, tmp_path)
    (tmp_path / ".last.pt.tmp4242").write_bytes(b"PK\x03\x04")
    (tmp_path / ".step_00000001.pt.tmp4242").write_bytes(b"PK")
    save_checkpoint({"step": 1, "config": {}, "generator": {}}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_checkpoint_records_its_kind_and_format_version(run):
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["kind"] == "dcgan-checkpoint"
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["data_size"] == 512


# ---------------------------------------------------------------------------------------------
# Hostile and foreign files
# ---------------------------------------------------------------------------------------------

class RunsCode:
    """Unpickling this calls `function(*args)`: what a malicious checkpoint would do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def code_carriers(marker: Path) -> dict[str, object]:
    return {"mkdir": RunsCode(os.mkdir, str(marker)),
            "exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()")}


@pytest.mark.parametrize("carrier", ["mkdir", "exec"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path, carrier, writer):
    payload = {"kind": "dcgan-checkpoint", "format_version": 1, "generator": {},
               "config": code_carriers(tmp_path / "pwned")[carrier], "step": 0}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # The payload is live: plain unpickling would run it (checked on a copy aimed elsewhere).
    armed = {**payload, "config": code_carriers(tmp_path / "control")[carrier]}
    pickle.loads(pickle.dumps(armed, protocol=2))
    assert (tmp_path / "control").exists()

    message = refused(path)
    assert "asks to run code" in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"", b"hello world\n", os.urandom(2000), b"PK\x03\x04truncated zip"],
                         ids=["empty", "text", "random", "bad-zip"])
def test_a_file_that_is_no_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    assert "not a readable checkpoint" in refused(path)


@pytest.mark.parametrize("payload", [torch.nn.Linear(2, 2).state_dict(), [1, 2, 3], {"kind": "other"}],
                         ids=["state-dict", "list", "other-kind"])
def test_a_torch_file_of_someone_else_is_refused(tmp_path, payload):
    torch.save(payload, tmp_path / "x.pt")
    assert "is not a dcgan checkpoint" in refused(tmp_path / "x.pt")


def test_a_truncated_checkpoint_is_refused(run, tmp_path):
    data = (run / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "not a readable checkpoint" in refused(tmp_path / "cut.pt")


def rewrite(run: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the run's last checkpoint with some entries changed (None deletes one)."""
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    payload.update(changes)
    payload = {k: v for k, v in payload.items() if v is not None}
    torch.save(payload, tmp_path / "changed.pt")
    return tmp_path / "changed.pt"


def test_a_newer_format_version_is_refused(run, tmp_path):
    message = refused(rewrite(run, tmp_path, format_version=FORMAT_VERSION + 1))
    assert "newer dcgan" in message and "upgrade" in message


@pytest.mark.parametrize("version", [0, -1, "2", 1.0])
def test_an_invalid_format_version_is_refused(run, tmp_path, version):
    assert "invalid checkpoint format version" in refused(rewrite(run, tmp_path, format_version=version))


@pytest.mark.parametrize("changes, expected", [
    ({"generator": None}, "missing generator"),
    ({"config": "latent_dim = 4"}, "damaged checkpoint"),
    ({"step": -3}, "damaged checkpoint"),
])
def test_a_damaged_checkpoint_is_refused(run, tmp_path, changes, expected):
    assert expected in refused(rewrite(run, tmp_path, **changes))


def test_format_1_is_upgraded_and_resumes(run, tmp_path, run_cli):
    v1 = rewrite(run, tmp_path, format_version=1, data_size=None)
    loaded = load_checkpoint(v1)
    assert (loaded["format_version"], loaded["data_size"]) == (FORMAT_VERSION, None)
    os.replace(v1, run / "checkpoints" / "last.pt")
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", "6")
    assert code == 0, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["format_version"] == FORMAT_VERSION


def test_another_architecture_is_refused_for_generate_and_resume(run, tmp_path, run_cli):
    payload = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    payload["config"]["latent_dim"] = 8  # the stored weights are for latent_dim 4
    torch.save(payload, run / "checkpoints" / "last.pt")
    code, _, err = run_cli("generate", "--checkpoint", run, "--out", tmp_path / "g.png", "--grid")
    assert code == 2 and "does not match this model's architecture" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", "6")
    assert code == 2 and "does not match this model's architecture" in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_directory_stands_for_its_last_checkpoint(run):
    assert_same_training_state(load_checkpoint(run), load_checkpoint(run / "checkpoints" / "last.pt"))
    assert load_checkpoint(run / "checkpoints")["step"] == 4  # a run's checkpoints folder: its last.pt
    assert refused(run / "samples") == (f"{run / 'samples'}: a folder that is not a run directory (no "
                                        f"checkpoints/last.pt or last.pt in it); name a checkpoint file or a run "
                                        f"directory")


# ---------------------------------------------------------------------------------------------
# Paths that are no checkpoint file: missing, special files, folders, no permission
# ---------------------------------------------------------------------------------------------

def test_a_missing_path_is_not_found(tmp_path):
    assert refused(tmp_path / "nope.pt") == f"checkpoint not found: {tmp_path / 'nope.pt'}"
    (tmp_path / "file").write_text("")
    assert refused(tmp_path / "file" / "x.pt") == f"checkpoint not found: {tmp_path / 'file' / 'x.pt'}"
    os.mkdir(tmp_path / "killed")
    os.mkdir(tmp_path / "killed" / "checkpoints")  # a run stopped before its first checkpoint
    assert refused(tmp_path / "killed") == f"checkpoint not found: {tmp_path / 'killed' / 'checkpoints' / 'last.pt'}"


def test_an_endless_device_is_refused_before_reading(tmp_path):
    assert refused(Path("/dev/zero")) == ("/dev/zero is a character device, not a regular file: name a checkpoint "
                                          "file or a run directory")
    os.symlink("/dev/zero", tmp_path / "last.pt")  # a link is judged by what it points to
    assert "is a character device, not a regular file" in refused(tmp_path / "last.pt")
    assert "is a character device, not a regular file" in refused(tmp_path)  # the folder's last.pt


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")  # opening it to read would block until something writes
    assert refused(tmp_path / "pipe.pt") == (f"{tmp_path / 'pipe.pt'} is a named pipe, not a regular file: name a "
                                             f"checkpoint file or a run directory")


def test_a_folder_named_like_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "run" / "checkpoints" / "last.pt").mkdir(parents=True)
    assert "last.pt is a folder, not a regular file" in refused(tmp_path / "run")


def test_a_path_that_cannot_be_looked_at_says_so(tmp_path, monkeypatch):
    locked = tmp_path / "locked"  # a folder without search permission (simulated: root may look anywhere)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    assert refused(locked / "last.pt") == f"cannot read checkpoint {locked / 'last.pt'}: Permission denied"


def test_an_unreadable_file_says_so(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "config": {}, "generator": {}}, tmp_path)
    real_open = builtins.open

    def no_permission(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_permission)
    assert refused(path) == f"cannot read checkpoint {path}: Permission denied"


# ---------------------------------------------------------------------------------------------
# A stored config out of bounds: refused before anything is allocated, naming the checkpoint
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value", [("latent_dim", 10**9), ("g_width", 10**6), ("image_size", 4096),
                                            ("num_classes", 10**9), ("grid_size", 10**9)])
def test_a_checkpoint_asking_for_absurd_sizes_is_refused_in_one_line(tmp_path, run_cli, setting, value):
    import dcgan

    config = {"preset": "tutorial", "image_size": 8, "latent_dim": 4, setting: value}
    if setting == "g_width":
        config.update(arch="dcgan", image_size=64)
    path = tmp_path / "huge.pt"
    torch.save({"kind": "dcgan-checkpoint", "format_version": FORMAT_VERSION, "generator": {}, "config": config,
                "step": 0}, path)
    expected = f"{path}: {setting} = {value}: must be at most"
    with pytest.raises(UserError, match=expected) as info:
        dcgan.load(path)
    assert "\n" not in str(info.value)
    code, _, err = run_cli("export", "--checkpoint", path, "--format", "torchscript", "--out", tmp_path / "g.pt")
    assert code == 2 and err.startswith(f"dcgan: error: {expected}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "g.pt").exists()
