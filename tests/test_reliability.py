"""The file-safety helpers of `miniglm.io`, the OSError policy of `run_command`, and smaller
failure paths: a malicious state.pt, resume hints, fetch's size limit."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from miniglm import checkpoint as ckpt
from miniglm.cli.common import run_command
from miniglm.data.fetch import FetchError, fetch
from miniglm.io import (
    OutputError,
    atomic_dir,
    atomic_write,
    check_confined,
    clean_stale,
    write_new,
    write_output,
)
from miniglm.train.run import RunError, latest_checkpoint, prepare_run_dir


def test_atomic_write_replaces_a_symlink_never_writes_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").symlink_to(outside)
    atomic_write(run / "config.json", "{}")
    assert outside.read_text() == "keep" and not (run / "config.json").is_symlink()
    assert [p.name for p in run.iterdir()] == ["config.json"]  # no temporary left


def test_write_new_refuses_existing_names_and_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "link", b"x")
    assert outside.read_text() == "keep"


def test_check_confined_refuses_only_links_leading_out(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    (run / "alias.jsonl").symlink_to(run / "metrics.jsonl")  # inside: harmless
    check_confined(run)
    (run / "checkpoints" / "best").symlink_to(tmp_path)
    with pytest.raises(OutputError, match=r"checkpoints/best: a symlink to .*, outside"):
        check_confined(run)


def test_clean_stale_removes_temps_and_restores_a_moved_aside_copy(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / ".step_0000004.ab12cd.tmp").mkdir()  # a half-written checkpoint
    (d / ".metrics.jsonl.x1y2z3.tmp").write_text("half")
    (d / "step_0000002.tmp77").mkdir()  # an older version's fixed name
    old = d / ".best.q9w8e7.old"  # killed between atomic_dir's two renames: best is missing
    old.mkdir()
    (old / "meta.json").write_text("{}")
    (d / "step_0000003").mkdir()
    clean_stale(d)
    assert sorted(p.name for p in d.iterdir()) == ["best", "step_0000003"]
    assert (d / "best" / "meta.json").read_text() == "{}"


def test_atomic_dir_failure_removes_its_temporary(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_run_command_turns_environment_errors_into_one_line(capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/train.bin")

    assert run_command("miniglm x", full, []) == 2
    assert capsys.readouterr().err == ("miniglm x: error: /data/train.bin: No space left on device "
                                       "(the disk is full; free some space)\n")

    def bug(argv):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):  # not the environment's fault: a traceback, exit 1
        run_command("miniglm x", bug, [])


def test_write_output_dash_goes_to_stdout(capsys):
    assert write_output("-", "a\n") == "stdout"
    assert capsys.readouterr().out == "a\n"


def test_malicious_state_is_only_not_a_valid_training_state(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / ckpt.STATE).write_bytes(pickle.dumps({"step": Evil()}))
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_state(tmp_path)
    message = str(e.value)
    assert "not a valid training state" in message and "\n" not in message and "weights_only" not in message
    assert not (tmp_path / "pwned").exists()


def test_a_run_killed_before_its_first_checkpoint_points_to_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"type": "start"}\n')
    with pytest.raises(ckpt.CheckpointError, match="before its first checkpoint; start it again with --overwrite"):
        latest_checkpoint(run)
    with pytest.raises(RunError, match="stopped before its first checkpoint .* start it again with --overwrite"):
        prepare_run_dir(run, overwrite=False)


def test_fetch_refuses_a_file_over_max_bytes(tmp_path):
    src = tmp_path / "book.txt"
    src.write_text("天" * 1000, encoding="utf-8")
    with pytest.raises(FetchError, match="3,000 bytes is over the --max-bytes limit of 100"):
        fetch([str(src)], tmp_path / "raw", max_bytes=100, progress=False)
    assert not (tmp_path / "raw").exists()
    assert fetch([str(src)], tmp_path / "raw", max_bytes=0, progress=False)[0].chars == 1000


def test_outputs_are_refused_when_they_are_directories(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write(tmp_path, "x")
    assert Path(tmp_path).is_dir()
