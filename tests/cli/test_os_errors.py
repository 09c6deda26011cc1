"""Hostile and unlucky file systems: outward symlinks, full disks, read-only folders, special files.

Every case must end in one line on stderr naming the path and cause, exit code 2, nothing written
outside the run and nothing half-written. Full and read-only disks are real tmpfs mounts where
this process may mount (tests run as root, where chmod stops nothing); elsewhere the system
calls are patched to fail the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest
from tiny_data import make_pretrain_dir, tiny_config

from miniglm.__main__ import main
from miniglm.train.trainer import train


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@contextlib.contextmanager
def mounted(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", str(path)], check=True)


def _failing(monkeypatch, root: Path, code: int):
    """Patch file creation under `root` to fail with `code` (where no real mount is possible)."""
    real_open, real_mkdir = os.open, os.mkdir

    def inside(p) -> bool:
        return Path(os.path.abspath(p)).is_relative_to(root)

    def fake_open(p, flags, *a, **k):
        if inside(p) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(p))
        return real_open(p, flags, *a, **k)

    def fake_mkdir(p, *a, **k):
        if inside(p):
            raise OSError(code, os.strerror(code), str(p))
        return real_mkdir(p, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.fixture
def readonly_dir(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    with mounted(ro, "ro,size=64k") as ok:
        if not ok:
            _failing(monkeypatch, ro, errno.EROFS)
        yield ro


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pretrain_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("run") / "run"
    train(tiny_config(data, out, max_steps=4, checkpoint_interval=2, eval_interval=2))
    return out


# --------------------------------------------------------------------------- symlinks leading out


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "checkpoints"])
def test_resume_refuses_a_run_with_an_outward_symlink(name, run, tmp_path, capsys):
    import shutil

    crafted = tmp_path / "crafted"
    shutil.copytree(run, crafted)
    victim = tmp_path / "victim"
    if name == "checkpoints":
        shutil.move(crafted / name, victim)
    else:  # a valid file, so only the link itself can be the reason for refusing
        victim.write_bytes((crafted / name).read_bytes())
    target = crafted / name
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.symlink_to(victim)
    before = sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in [victim, *victim.rglob("*")])
    rc, err = run_cli(capsys, "train", "--out", crafted, "--resume", "--max_steps", "6")
    assert rc == 2 and "outside" in one_line(err) and name in err
    rc, err = run_cli(capsys, "train", "--out", crafted, "--overwrite", "--config", "tiny", "--data",
                      run.parent.parent / "data0", "--device", "cpu")
    assert rc == 2 and ("outside" in one_line(err) or "not found" in err)
    assert (crafted / "config.json").exists() or (crafted / "config.json").is_symlink()  # nothing deleted
    after = sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in [victim, *victim.rglob("*")])
    assert after == before


def test_overwrite_checks_before_deleting(run, data, tmp_path, capsys):
    import shutil

    crafted = tmp_path / "crafted"
    shutil.copytree(run, crafted)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (crafted / "tensorboard").symlink_to(outside)
    rc, err = run_cli(capsys, "train", "--config", "tiny", "--data", data, "--out", crafted, "--overwrite",
                      "--device", "cpu", "--max_steps", "2")
    assert rc == 2 and "tensorboard" in one_line(err)
    assert (crafted / "config.json").is_file() and (crafted / "metrics.jsonl").is_file()
    assert (outside / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- directories of another kind


def test_prepare_refuses_a_run_directory(run, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("第一回 甲\n" + "天地玄黄。" * 50 + "\n第二回 乙\n" + "宇宙洪荒。" * 50 + "\n", encoding="utf-8")
    config = (run / "config.json").read_bytes()
    rc, err = run_cli(capsys, "prepare", corpus, "--out", run, "--no-progress")
    assert rc == 2 and "training run directory" in one_line(err) and "--overwrite" in err
    assert (run / "config.json").read_bytes() == config
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    rc, err = run_cli(capsys, "prepare", corpus, "--out", other, "--no-progress")
    assert rc == 2 and "config.json" in one_line(err)
    assert main(["prepare", str(corpus), "--out", str(other), "--no-progress", "--overwrite",
                 "--vocab-size", "300"]) == 0
    assert (other / "meta.json").is_file()


# --------------------------------------------------------------------------- full disks


def test_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_temp(data, tmp_path, capsys):
    full = tmp_path / "full"
    with mounted(full, "size=96k") as ok:
        if not ok:
            pytest.skip("cannot mount a small tmpfs here")
        rc, err = run_cli(capsys, "train", "--config", "tiny", "--data", data, "--out", full / "run",
                          "--device", "cpu", "--dtype", "float32", "--max_steps", "2", "--eval_interval", "0")
        assert rc == 2 and "No space left on device" in one_line(err) and str(full) in err
        assert "checkpoints" in err and (full / "run" / "metrics.jsonl").is_file()  # failed mid-checkpoint
        leftovers = [p.name for p in (full / "run").rglob("*") if ".tmp" in p.name]
        assert leftovers == []


def test_sample_to_dev_full_reports_enospc_and_keeps_the_device(capsys, tmp_path):
    from test_sample_chat import FLAGS, make_run

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    run = make_run(tmp_path, "sft")
    rc, err = run_cli(capsys, "sample", run, "--prompt", "你好", "--output", "/dev/full", *FLAGS)
    assert rc == 2 and "/dev/full: No space left on device" in one_line(err)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_sample_output_dash_and_fifo(capsys, tmp_path):
    import json
    import threading

    from test_sample_chat import FLAGS, make_run

    run = make_run(tmp_path, "sft")
    assert main(["sample", str(run), "--prompt", "你好", "--output", "-", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert [json.loads(line)["prompt"] for line in out.splitlines()] == ["你好"]  # stdout holds only JSONL
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    assert main(["sample", str(run), "--prompt", "你好", "--output", str(fifo), *FLAGS]) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and json.loads(got[0])["prompt"] == "你好"


# --------------------------------------------------------------------------- read-only folders


def test_read_only_outputs_fail_before_the_work(readonly_dir, run, data, tmp_path, capsys, monkeypatch):
    from miniglm.evaluate import report

    monkeypatch.setattr(report, "evaluate_run", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    corpus = tmp_path / "c.txt"
    corpus.write_text("天地玄黄。\n\n宇宙洪荒。\n", encoding="utf-8")
    cases = [("prepare", corpus, "--out", readonly_dir / "data"),
             ("train", "--config", "tiny", "--data", data, "--out", readonly_dir / "run", "--device", "cpu"),
             ("eval", run, "--out", readonly_dir / "eval"),
             ("plot", run, "--out", readonly_dir / "plots")]
    for argv in cases:
        rc, err = run_cli(capsys, *argv)
        assert rc == 2 and str(readonly_dir) in one_line(err) and "Read-only file system" in err, (argv, err)
    assert not any(readonly_dir.iterdir())


def test_plot_out_naming_a_file(run, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = run_cli(capsys, "plot", run, "--out", f)
    assert rc == 2 and "exists and is not a directory" in one_line(err)
    assert f.read_text() == "x"


def test_chat_skips_lines_that_are_not_utf8(tmp_path, monkeypatch, capsys):
    import io

    from test_sample_chat import FLAGS, make_run

    run = make_run(tmp_path, "sft")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe bad\n/exit\n"), encoding="utf-8"))
    assert main(["chat", str(run), *FLAGS]) == 0
    captured = capsys.readouterr()
    assert "not UTF-8 text; skipped" in captured.out and "Traceback" not in captured.err
