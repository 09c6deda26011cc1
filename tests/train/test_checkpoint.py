"""Checkpoints: a kill mid-write leaves the previous one loadable, the training state loads without
unpickling, pruning keeps the last N plus the best, and strict loading says exactly what differs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from tiny_data import make_pretrain_dir, tiny_config

from miniglm import checkpoint as ckpt
from miniglm.model.model import MiniGLM
from miniglm.train.trainer import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pretrain_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(data, out, max_steps=20, checkpoint_interval=5, keep_last=2, eval_interval=10))
    return out


def test_keeps_the_last_n_and_the_best(run):
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000015", "step_0000020"]
    best = ckpt.load_checkpoint(run, which="best")
    assert best.path.name == "best" and best.meta["step"] in (10, 20) and "val_loss" in best.meta
    assert not (best.path / ckpt.STATE).exists()  # weights only; resuming uses the step checkpoints


def test_state_holds_only_tensors_and_plain_values(run):
    path = ckpt.list_checkpoints(run)[-1] / ckpt.STATE
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["step"] == 20 and state["loader"] == {"next_batch": 20}
    assert {"optimizer", "rng", "best_val_loss", "elapsed"} <= set(state)

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (bool, int, float, str, torch.Tensor))

    assert plain(state)


def test_killed_mid_write_leaves_the_previous_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(data, out, max_steps=5, checkpoint_interval=5, eval_interval=0))
    before = ckpt.load_checkpoint(out, which="latest").model.state_dict()

    def killed(*args, **kwargs):  # the weights are already written when the state is saved
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(data, out, max_steps=10, checkpoint_interval=5, eval_interval=0), resume=True)
    monkeypatch.undo()
    leftovers = [p.name for p in (out / "checkpoints").iterdir()]
    assert not any(".tmp" in name for name in leftovers)  # an interrupted write removes its own temp dir
    # what a kill -9 mid-write leaves behind (a hidden temp sibling) is ignored by loaders
    (out / "checkpoints" / ".step_0000010.abc123.tmp").mkdir()
    (out / "checkpoints" / ".step_0000010.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_0000005"]
    after = ckpt.load_checkpoint(out, which="latest")
    assert after.meta["step"] == 5 and all(torch.equal(before[k], v) for k, v in after.model.state_dict().items())
    assert train(tiny_config(data, out, max_steps=10, checkpoint_interval=5, eval_interval=0),
                 resume=True)["step"] == 10


def test_killed_while_replacing_best_keeps_the_old_best(run, monkeypatch, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    best = ckpt.load_checkpoint(copy, which="best")
    monkeypatch.setattr(ckpt, "write_new", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        ckpt.save_checkpoint(copy / "checkpoints" / "best", best.model, best.tokenizer, 99)
    again = ckpt.load_checkpoint(copy, which="best")
    assert again.meta["step"] == best.meta["step"]
    assert sorted(p.name for p in (copy / "checkpoints").iterdir() if p.name.startswith(".")) == []  # no temp left


def test_shape_mismatch_names_the_tensor(run):
    loaded = ckpt.load_checkpoint(run)
    bigger = MiniGLM(replace(loaded.model.config, intermediate_size=96))
    with pytest.raises(ckpt.CheckpointError, match=r"shape mismatch model\.layers\.0\.mlp\.\w+_proj\.weight: "
                                                   r"checkpoint \(\d+, \d+\) vs model"):
        ckpt.load_weights(bigger, loaded.path)
    deeper = MiniGLM(replace(loaded.model.config, num_hidden_layers=3))
    with pytest.raises(ckpt.CheckpointError, match=r"missing model\.layers\.2\."):
        ckpt.load_weights(deeper, loaded.path)


def test_format_version_and_tokenizer_hash_are_checked(run, tmp_path):
    import shutil

    bad = tmp_path / "ck"
    shutil.copytree(ckpt.resolve_checkpoint(run), bad)
    meta = json.loads((bad / ckpt.META).read_text())
    (bad / ckpt.META).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ckpt.CheckpointError, match="format version 99, this MiniGLM reads version 1"):
        ckpt.load_checkpoint(bad)
    (bad / ckpt.META).write_text(json.dumps({**meta, "tokenizer_sha256": "0" * 64}))
    with pytest.raises(ckpt.CheckpointError, match="tokenizer.json .* is not the one the model was trained with"):
        ckpt.load_checkpoint(bad)


def test_resume_with_a_different_model_says_what_differs(data, run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = tiny_config(data, copy, max_steps=30, model={"hidden_size": 64, "intermediate_size": 96})
    with pytest.raises(ckpt.CheckpointError, match="hidden_size: 32 vs 64, intermediate_size: 64 vs 96"):
        train(cfg, resume=True)
