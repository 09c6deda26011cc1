"""The float32 GEMM routine and the autocast dtype are fixed rules, recorded in the run and reused on
resume: a resumed run computes what an uninterrupted one computes, whatever this process's rule says."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_data import make_pretrain_dir, tiny_config

from miniglm import checkpoint as ckpt
from miniglm import device
from miniglm.model import kernels
from miniglm.train.run import read_metrics
from miniglm.train.trainer import train

needs_onednn = pytest.mark.skipif(not kernels.onednn_linear_works(), reason="no oneDNN linear in this torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pretrain_dir(tmp_path_factory.mktemp("data"))


def losses(run) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if r["type"] == "train"]


def config(data, out, **kw):
    return tiny_config(data, out, **{"max_steps": 12, "checkpoint_interval": 6, "eval_interval": 0,
                                     "log_interval": 1, **kw})


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts products that went through oneDNN (the flag the routine choice sets)."""
    calls = []
    real = kernels._use_onednn

    def spy(a, b):
        used = real(a, b)
        if used:
            calls.append(1)
        return used

    monkeypatch.setattr(kernels, "_use_onednn", spy)
    return calls


def test_choice_is_resolved_recorded_and_restored(data, tmp_path):
    before = kernels._float32_matmul
    out = tmp_path / "run"
    train(config(data, out, max_steps=6))
    saved = json.loads((out / "config.json").read_text())
    rule = kernels.default_float32_matmul()
    assert saved["matmul"] == rule and saved["dtype"] == "float32"
    meta = ckpt.read_meta(ckpt.list_checkpoints(out)[-1])
    assert meta["kernels"] == {"dtype": "float32", "matmul": rule}
    assert kernels._float32_matmul == before  # the process's routine is put back after the run


@needs_onednn
def test_resume_keeps_the_recorded_routine_when_the_rule_changes(data, tmp_path, monkeypatch, onednn_calls):
    whole = tmp_path / "whole"
    train(config(data, whole, matmul="blas"))
    part = tmp_path / "part"
    train(config(data, part, matmul="blas"), stop_after=lambda step: step == 6)
    assert not onednn_calls
    # another process, another rule (say, a machine with AVX-512): "auto" must not take it
    monkeypatch.setattr(kernels, "default_float32_matmul", lambda: "onednn")
    monkeypatch.setattr(device, "cpu_prefers_bf16", lambda: True)
    train(config(data, part, dtype="auto"), resume=True)
    assert not onednn_calls  # the recorded blas routine ran, not the new rule's oneDNN
    assert losses(part) == losses(whole)
    assert ckpt.read_meta(ckpt.list_checkpoints(part)[-1])["kernels"] == {"dtype": "float32", "matmul": "blas"}


@needs_onednn
def test_explicit_matmul_overrides_the_recorded_one(data, tmp_path, onednn_calls):
    out = tmp_path / "run"
    train(config(data, out, matmul="blas", max_steps=6))
    assert not onednn_calls
    train(config(data, out, matmul="onednn", max_steps=8), resume=True)
    assert onednn_calls
    assert ckpt.read_meta(ckpt.list_checkpoints(out)[-1])["kernels"]["matmul"] == "onednn"


def test_same_seed_same_losses(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(config(data, a, max_steps=6))
    train(config(data, b, max_steps=6))
    assert losses(a) == losses(b)


def test_rules_are_read_from_the_cpu_not_timed(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert {"avx512_bf16", "avx2"} <= device.cpu_flags(str(info))
    assert device.cpu_flags(str(tmp_path / "missing")) == set()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert kernels.default_float32_matmul() == "blas"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert kernels.default_float32_matmul() == ("onednn" if kernels.onednn_linear_works() else "blas")
    with pytest.raises(kernels.KernelError, match="matmul='fast'"):
        kernels.resolve_float32_matmul("fast")
