"""Distributed training: a 2-process gloo `torchrun` run on the CPU matches the single-process run
with the same global batch, and only rank 0 writes the run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_data import make_pretrain_dir, tiny_config

from miniglm import checkpoint as ckpt
from miniglm.train.run import read_metrics
from miniglm.train.trainer import train

REPO = Path(__file__).resolve().parents[2]

@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(tmp_path):
    pytest.importorskip("torch.distributed")
    data = make_pretrain_dir(tmp_path / "data")
    common = {"max_steps": 8, "log_interval": 1, "eval_interval": 4, "checkpoint_interval": 4,
              "grad_accum_steps": 2}  # accumulation exercises no_sync on the first micro-batch
    train(tiny_config(data, tmp_path / "single", batch_size=4, **common))

    flags = [f"--{k}={v}" for k, v in common.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "miniglm", "train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "ddp"),
           "--device", "cpu", "--dtype", "float32", "--progress", "false", "--batch_size", "2", *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("parameters (") == 1  # only rank 0 talks

    single = read_metrics(tmp_path / "single" / "metrics.jsonl")
    ddp = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert ddp[0]["world_size"] == 2 and ddp[0]["tokens_per_step"] == single[0]["tokens_per_step"]
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("eval", "val_loss")):
        a = [(r["step"], r[key]) for r in single if r["type"] == kind]
        b = [(r["step"], r[key]) for r in ddp if r["type"] == kind]
        assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
        for (_, x), (_, y) in zip(a, b):
            assert y == pytest.approx(x, rel=1e-4), (kind, key, a, b)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "ddp")] == ["step_0000004", "step_0000008"]
    assert not list((tmp_path / "ddp" / "checkpoints").glob("*.tmp*"))
