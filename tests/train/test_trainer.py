"""The training loop and its batches: schedule, optimizer groups, loader reproducibility, metrics,
exact resume, stopping on signals and on NaN, SFT mode, and the `miniglm train` command."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from tiny_data import make_pretrain_dir, make_sft_dir, tiny_config

from miniglm import checkpoint as ckpt
from miniglm.cli.common import run_command
from miniglm.cli.train import main as train_main
from miniglm.config import TrainConfig, load_config
from miniglm.data import DataError, loader, store
from miniglm.errors import UserError
from miniglm.model import model as model_module
from miniglm.train.run import read_metrics
from miniglm.train.step import Muon, Optimizers, build_optimizer, lr_at
from miniglm.train.trainer import TrainingDiverged, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pretrain_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory, data):
    return make_sft_dir(tmp_path_factory.mktemp("sft"), data)


def losses(run_dir, kind="train", key="loss"):
    return [(r["step"], r[key]) for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == kind]


# --------------------------------------------------------------------------- schedule and optimizer


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = load_config(TrainConfig, overrides={"max_steps": 100, "warmup_steps": 10, "learning_rate": 1e-3,
                                              "min_lr": 1e-4})
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg) == pytest.approx(1e-4) and lrs[55] == pytest.approx(5.5e-4)


def test_weight_decay_only_on_matrices():
    from miniglm.config import ModelConfig
    from miniglm.model.model import MiniGLM

    m = MiniGLM(ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16))
    cfg = load_config(TrainConfig, overrides={"weight_decay": 0.1})
    decay, no_decay = build_optimizer(m, cfg, torch.device("cpu")).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from miniglm.config import ModelConfig
    from miniglm.model.model import MiniGLM

    for tied in (True, False):
        m = MiniGLM(ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16, tie_word_embeddings=tied))
        opt = build_optimizer(m, load_config(TrainConfig, overrides={"optimizer": "muon"}), torch.device("cpu"))
        assert isinstance(opt, Optimizers)
        adamw, muon = opt.optimizers
        names = {id(p): n for n, p in m.named_parameters()}
        in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
        assert isinstance(muon, Muon) and in_muon == {n for n, p in m.named_parameters()
                                                      if ".layers." in n and p.dim() == 2}
        in_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
        assert in_adamw.isdisjoint(in_muon) and in_adamw | in_muon == set(names.values())
        assert ("lm_head.weight" in in_adamw) == (not tied) and "model.embed_tokens.weight" in in_adamw


def test_muons_adamw_side_learns_at_its_scale_of_the_scheduled_rate():
    from miniglm.config import ConfigError, ModelConfig
    from miniglm.model.model import MiniGLM
    from miniglm.train.step import Stepper

    m = MiniGLM(ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16, tie_word_embeddings=False))
    cfg = load_config(TrainConfig, overrides={"optimizer": "muon", "adamw_lr_scale": 2.5})
    opt = build_optimizer(m, cfg, torch.device("cpu"))
    stepper = Stepper(m, opt, torch.device("cpu"), torch.float32, 1, 1.0)
    x = torch.randint(0, 50, (2, 9))
    stepper.step(iter([(x[:, :-1], x[:, 1:], None)]), 1e-3)
    adamw, muon = opt.optimizers
    assert [g["lr"] for g in adamw.param_groups] == [pytest.approx(2.5e-3)] * 2
    assert [g["lr"] for g in muon.param_groups] == [1e-3]
    # a resumed run keeps its own scale, not the one saved with the optimizer state
    other = build_optimizer(m, load_config(TrainConfig, overrides={"optimizer": "muon", "adamw_lr_scale": 4}),
                            torch.device("cpu"))
    other.load_state_dict(opt.state_dict())
    assert [g["lr_scale"] for g in other.optimizers[0].param_groups] == [4, 4]
    for bad, message in ((0, "must be > 0"), (-1, "must be > 0")):
        with pytest.raises(ConfigError, match=f"adamw_lr_scale: {message}"):
            load_config(TrainConfig, overrides={"optimizer": "muon", "adamw_lr_scale": bad})
    with pytest.raises(ConfigError, match="adamw_lr_scale: 2 applies to optimizer = muon only"):
        load_config(TrainConfig, overrides={"adamw_lr_scale": 2})


def test_dropout_is_a_training_setting(data, tmp_path):
    from miniglm.config import ConfigError

    for bad in (1, -0.5):
        with pytest.raises(ConfigError, match="dropout: must be in"):
            load_config(TrainConfig, overrides={"dropout": bad})
    kw = dict(max_steps=20, log_interval=5, eval_interval=20, batch_size=2, block_size=16)
    train(tiny_config(data, tmp_path / "plain", **kw))
    train(tiny_config(data, tmp_path / "drop", dropout=0.5, **kw))
    assert losses(tmp_path / "drop")[1:] != losses(tmp_path / "plain")[1:]  # the masks change the training
    saved = ckpt.load_checkpoint(tmp_path / "drop", which="latest")
    assert saved.model.dropout == 0.0 and "dropout" not in saved.meta["model_config"]  # not part of the model


@pytest.mark.parametrize("ns_dtype", [None, torch.bfloat16])
def test_muon_update_is_torchs_muon(ns_dtype):
    """The same step as torch.optim.Muon(adjust_lr_fn="match_rms_adamw"), whose Newton-Schulz is bfloat16,
    with ours in the weights' float32 or in bfloat16; the weights stay float32."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(24, 24), (24, 24), (40, 24), (24, 40)]  # stacked by shape, tall ones transposed
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    a = Muon(ours, lr=0.02, weight_decay=0.1, ns_dtype=ns_dtype)
    b = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q, p0 in zip(ours, theirs, start):
        moved = (q.detach() - p0).norm()
        assert moved > 0.01 and (p.detach() - q.detach()).norm() < 0.02 * moved
        assert p.dtype == torch.float32


@pytest.mark.parametrize("dtype,ns_dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                            ("float16", torch.float32)])
def test_muon_newton_schulz_runs_in_bfloat16_only_where_the_run_computes_in_it(dtype, ns_dtype):
    from miniglm.config import ModelConfig
    from miniglm.model.model import MiniGLM

    m = MiniGLM(ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16))
    cfg = load_config(TrainConfig, overrides={"optimizer": "muon", "dtype": dtype})
    assert build_optimizer(m, cfg, torch.device("cpu")).optimizers[1].ns_dtype == ns_dtype


# --------------------------------------------------------------------------- batches


def test_pretrain_batches_are_windows_reproducible_and_resumable(data):
    meta = store.read_meta(data, "pretrain")
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
    a = loader.PretrainBatches(data, meta, block_size=16, batch_size=4, seed=3)
    x, y, mask = next(a)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long and mask is None
    for row_x, row_y, i in zip(x, y, a.starts(0)):
        assert row_x.tolist() == tokens[i:i + 16].tolist() and row_y.tolist() == tokens[i + 1:i + 17].tolist()
    seq = [next(a)[0] for _ in range(3)]
    b = loader.PretrainBatches(data, meta, block_size=16, batch_size=4, seed=3)
    b.load_state_dict({"next_batch": 1})
    assert all(torch.equal(s, next(b)[0]) for s in seq)
    c = loader.PretrainBatches(data, meta, block_size=16, batch_size=4, seed=4)
    assert not torch.equal(next(c)[0], x)


def test_ranks_split_the_single_process_batch(data):
    meta = store.read_meta(data, "pretrain")
    single = loader.PretrainBatches(data, meta, 16, 8, seed=1)
    ranks = [loader.PretrainBatches(data, meta, 16, 4, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        assert torch.equal(next(single)[0], torch.cat([next(r)[0] for r in ranks]))


def test_pretrain_validation_covers_val_in_order(data):
    meta = store.read_meta(data, "pretrain")
    val = np.fromfile(data / "val.bin", dtype=np.uint16)
    batches = list(loader.pretrain_val_batches(data, meta, block_size=16, batch_size=5))
    xs = torch.cat([x for x, _, _ in batches]).flatten()
    n = (len(val) - 1) // 16
    assert xs.tolist() == val[:n * 16].tolist()
    assert torch.cat([y for _, y, _ in batches]).flatten().tolist() == val[1:n * 16 + 1].tolist()
    assert len(list(loader.pretrain_val_batches(data, meta, 16, 5, max_batches=2))) == 2
    split = [list(loader.pretrain_val_batches(data, meta, 16, 5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(split[0]) + len(split[1]) == len(batches)


def test_sft_batches_cover_each_epoch_and_align_mask(sft_data):
    ids = np.load(sft_data / "train_ids.npy")
    mask = np.load(sft_data / "train_mask.npy")
    meta = store.read_meta(sft_data, "sft")
    b = loader.SFTBatches(sft_data, meta, batch_size=4, seed=0)
    seen = [r for k in range(6) for r in b.rows(k)]  # 24 rows = one epoch
    assert sorted(seen) == list(range(24))
    assert [r for k in range(6, 12) for r in b.rows(k)] != seen  # next epoch reshuffled
    x, y, m = next(b)
    rows = sorted(b.rows(0))
    assert x.tolist() == ids[rows, :-1].tolist() and y.tolist() == ids[rows, 1:].tolist()
    assert m.tolist() == mask[rows].tolist() and m.dtype == torch.float32
    val = list(loader.sft_val_batches(sft_data, meta, 4))
    assert sum(len(v[0]) for v in val) == 6


def test_bad_data_dirs_are_clear_errors(tmp_path, data):
    with pytest.raises(DataError, match="not a prepared data directory \\(no meta.json"):
        store.read_meta(tmp_path, "pretrain")
    with pytest.raises(DataError, match="a prepared 'pretrain' directory, but 'sft' data is needed"):
        store.read_meta(data, "sft")
    sft = make_sft_dir(tmp_path / "s", data, block_size=32)
    meta = store.read_meta(sft, "sft")
    with pytest.raises(DataError, match="expected \\(N, 17\\)"):
        store.open_rows(sft, "train", {**meta, "block_size": 16})


# --------------------------------------------------------------------------- training runs


def test_training_learns_and_logs_metrics(data, tmp_path):
    result = train(tiny_config(data, tmp_path / "run", max_steps=40, eval_interval=20))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    start = records[0]
    assert start["type"] == "start" and start["mode"] == "pretrain" and start["init_from"] is None
    assert start["params"] > start["non_embedding_params"] > 0
    train_lines = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_lines] == list(range(5, 41, 5))
    for r in train_lines:
        assert set(r) >= {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "elapsed"}
        assert r["tokens"] == r["step"] * 4 * 32 and r["tokens_per_sec"] > 0 and 0 < r["mfu"] < 1
    assert train_lines[-1]["loss"] < train_lines[0]["loss"] - 1.0
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40]
    meta = json.loads((data / "meta.json").read_text())
    e = evals[-1]
    assert e["val_ppl"] == pytest.approx(math.exp(e["val_loss"]))
    assert e["val_bpc"] == pytest.approx(e["val_loss"] * meta["val_tokens"] / meta["val_chars"] / math.log(2))
    assert e["val_tokens"] == 4 * 4 * 32  # eval_steps=4 batches of 4 x 32
    assert result["val_loss"] == e["val_loss"] and result["step"] == 40
    best = ckpt.load_checkpoint(tmp_path / "run")
    assert best.meta["val_loss"] == min(r["val_loss"] for r in evals)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_0000025", "step_0000040"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["vocab_size"] == meta["vocab_size"]


def test_whole_validation_set_when_eval_steps_is_zero(data, tmp_path):
    train(tiny_config(data, tmp_path / "run", max_steps=2, eval_steps=0))
    val_tokens = json.loads((data / "meta.json").read_text())["val_tokens"]
    assert losses(tmp_path / "run", "eval", "val_tokens") == [(2, (val_tokens - 1) // 32 * 32)]


@pytest.mark.parametrize("optimizer,dropout", [("adamw", 0.0), ("muon", 0.0), ("muon", 0.2)])
def test_resume_reproduces_the_uninterrupted_run_exactly(data, tmp_path, optimizer, dropout):
    kw = dict(max_steps=200, log_interval=7, eval_interval=50, checkpoint_interval=30, batch_size=2, block_size=16,
              optimizer=optimizer, dropout=dropout)
    train(tiny_config(data, tmp_path / "full", **kw))
    first = train(tiny_config(data, tmp_path / "split", **kw), stop_after=lambda step: step == 100)
    assert first["step"] == 100 and first["interrupted"] == "stop_after"
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 101, "loss": 9.9}\n{"type": "tra')  # logged after the checkpoint, torn
    second = train(tiny_config(data, tmp_path / "split", **kw), resume=True)
    assert second["step"] == 200
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("train", "lr"), ("eval", "val_loss")):
        assert losses(tmp_path / "split", kind, key) == losses(tmp_path / "full", kind, key)
    a = ckpt.load_checkpoint(tmp_path / "full", which="latest").model.state_dict()
    b = ckpt.load_checkpoint(tmp_path / "split", which="latest").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    other = "adamw" if optimizer == "muon" else "muon"  # the state of one optimizer is not the other's
    with pytest.raises(ckpt.CheckpointError, match=f"optimizer state does not fit optimizer = {other}"):
        train(tiny_config(data, tmp_path / "split", **{**kw, "max_steps": 210, "optimizer": other}), resume=True)


def test_sigint_saves_a_checkpoint_and_stops(data, tmp_path):
    def interrupt(step):
        if step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # the real handler; noticed at the end of the next step
        return False

    result = train(tiny_config(data, tmp_path / "run", checkpoint_interval=25), stop_after=interrupt)
    assert result["signal"] == signal.SIGINT and result["interrupted"] == "SIGINT" and result["step"] == 8
    assert ckpt.list_checkpoints(tmp_path / "run")[-1].name == "step_0000008"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert train(tiny_config(data, tmp_path / "run", max_steps=10), resume=True)["step"] == 10


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = model_module.linear_cross_entropy

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 12 else loss

    monkeypatch.setattr(model_module, "linear_cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match="loss nan, gradient norm nan at step 13 .*diverged.*step_0000010"):
        train(tiny_config(data, tmp_path / "run", checkpoint_interval=10, eval_interval=0))
    assert isinstance(TrainingDiverged("x"), UserError)
    good = ckpt.load_checkpoint(tmp_path / "run", which="latest")
    assert good.meta["step"] == 10 and all(torch.isfinite(p).all() for p in good.model.parameters())
    assert max(s for s, _ in losses(tmp_path / "run")) == 10


def test_sft_mode_from_a_pretrained_run(data, sft_data, tmp_path):
    train(tiny_config(data, tmp_path / "pre", max_steps=10))
    cfg = tiny_config(sft_data, tmp_path / "sft", mode="sft", init_from=str(tmp_path / "pre"), max_steps=6,
                      eval_interval=3, eval_steps=0, model={"hidden_size": 64})  # model comes from the run
    result = train(cfg)
    assert result["val_bpc"] is None and result["val_loss"] > 0
    start = read_metrics(tmp_path / "sft" / "metrics.jsonl")[0]
    assert start["mode"] == "sft" and start["init_from"].endswith("best")
    evals = [r for r in read_metrics(tmp_path / "sft" / "metrics.jsonl") if r["type"] == "eval"]
    mask = np.load(sft_data / "val_mask.npy")
    assert evals[0]["val_bpc"] is None and evals[0]["val_tokens"] == int(mask.sum())
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["model"]["hidden_size"] == 32


def test_sft_learning_rate_zero_takes_the_pretrained_runs_rates(data, sft_data, tmp_path, capsys):
    import shutil

    train(tiny_config(data, tmp_path / "pre", max_steps=4, learning_rate=2.5e-3, min_lr=2.5e-4, optimizer="muon",
                      adamw_lr_scale=2))
    train(tiny_config(sft_data, tmp_path / "sft", mode="sft", init_from=str(tmp_path / "pre"), max_steps=2,
                      learning_rate=0, min_lr=0, eval_interval=0))
    saved = json.loads((tmp_path / "sft" / "config.json").read_text())
    # recorded resolved, so --resume keeps them; the rates come with the optimizer they were set for
    assert (saved["learning_rate"], saved["min_lr"], saved["optimizer"], saved["adamw_lr_scale"]) == (
        2.5e-3, 2.5e-4, "muon", 2)
    assert "with muon (AdamW side x2), the --init-from run's" in capsys.readouterr().out
    train_lrs = [r["lr"] for r in read_metrics(tmp_path / "sft" / "metrics.jsonl") if r["type"] == "train"]
    assert max(train_lrs) <= 2.5e-3 and train_lrs

    # a checkpoint with no training run around it (e.g. an imported directory): the fixed fallback
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "pre" / "checkpoints" / "best", bare)
    train(tiny_config(sft_data, tmp_path / "sft2", mode="sft", init_from=str(bare), max_steps=2, learning_rate=0,
                      min_lr=0, eval_interval=0))
    saved = json.loads((tmp_path / "sft2" / "config.json").read_text())
    assert (saved["learning_rate"], saved["min_lr"], saved["optimizer"]) == (5e-4, 5e-5, "adamw")
    assert "has no training config" in capsys.readouterr().out

    pre = json.loads((tmp_path / "pre" / "config.json").read_text())
    (tmp_path / "pre" / "config.json").write_text(json.dumps({**pre, "optimizer": "lion"}))
    with pytest.raises(DataError, match=r"pre/config.json: optimizer 'lion': not one of adamw, muon"):
        train(tiny_config(sft_data, tmp_path / "sft4", mode="sft", init_from=str(tmp_path / "pre"), max_steps=2,
                          learning_rate=0, min_lr=0, eval_interval=0))

    (tmp_path / "pre" / "config.json").write_text('{"learning_rate": "fast"}')  # a run config that says no rate
    with pytest.raises(DataError, match=r"pre/config.json: no learning_rate/min_lr to take .* set --learning_rate"):
        train(tiny_config(sft_data, tmp_path / "sft3", mode="sft", init_from=str(tmp_path / "pre"), max_steps=2,
                          learning_rate=0, min_lr=0, eval_interval=0))

    with pytest.raises(ValueError, match="learning_rate: must be > 0"):  # 0 means nothing without init_from
        tiny_config(sft_data, tmp_path / "x", mode="sft", learning_rate=0)


def test_sft_takes_block_size_from_its_rows(data, sft_data, tmp_path):
    train(tiny_config(data, tmp_path / "pre", max_steps=1))
    cfg = tiny_config(sft_data, tmp_path / "sft", mode="sft", block_size=16, max_steps=1,
                      init_from=str(tmp_path / "pre"))
    train(cfg)  # the config's 16 is not what the rows have (32): the rows win
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["block_size"] == 32


def test_vocab_and_tokenizer_mismatches_are_refused(data, tmp_path):
    with pytest.raises(DataError, match="model.vocab_size=50, but the tokenizer"):
        train(tiny_config(data, tmp_path / "a", model={"vocab_size": 50}))
    other = make_pretrain_dir(tmp_path / "other", n_train=150, seed=5)
    train(tiny_config(other, tmp_path / "b", max_steps=1))
    with pytest.raises(ckpt.CheckpointError, match="trained with tokenizer .* prepared with tokenizer"):
        train(tiny_config(data, tmp_path / "c", init_from=str(tmp_path / "b")))


def test_an_existing_run_is_not_overwritten_by_accident(data, tmp_path):
    train(tiny_config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(UserError, match="already holds a run.*--resume.*--overwrite"):
        train(tiny_config(data, tmp_path / "run", max_steps=2))
    train(tiny_config(data, tmp_path / "run", max_steps=3), overwrite=True)
    assert [s for s, _ in losses(tmp_path / "run")] == [3]
    with pytest.raises(ckpt.CheckpointError, match="nothing to resume"):
        train(tiny_config(data, tmp_path / "empty", max_steps=2), resume=True)


def test_tensorboard_without_the_package_is_a_clear_error(data, tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match="pip install tensorboard"):
        train(tiny_config(data, tmp_path / "run", tensorboard=True))


# --------------------------------------------------------------------------- the command


def test_cli_trains_refuses_a_second_run_and_resumes(data, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--config", "tiny", "--data", str(data), "--out", str(run), "--max_steps", "4",
            "--dtype=float32", "--model.hidden_size", "16", "--eval_interval", "0"]
    assert run_command("miniglm train", train_main, argv) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "without embeddings" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["max_steps"] == 4 and saved["model"]["hidden_size"] == 16 and saved["data"] == str(data)
    assert run_command("miniglm train", train_main, argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert run_command("miniglm train", train_main, ["--out", str(run), "--resume", "--max_steps", "6"]) == 0
    assert [s for s, _ in losses(run)] == [4, 5, 6]
    assert json.loads((run / "config.json").read_text())["max_steps"] == 6


def test_cli_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--data", "--out", "--resume", "--init-from", "--overwrite", "--max_steps",
                 "--model.hidden_size", "--grad_accum_steps", "--dtype", "--compile", "--tensorboard"):
        assert flag in text


def test_cli_bad_value_is_one_line_error(tmp_path, capsys):
    assert run_command("miniglm train", train_main, ["--config", "tiny", "--batch_size", "zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "batch_size" in err


# --------------------------------------------------------------------------- devices and MFU


def test_devices_dtypes_and_mfu_accounting(monkeypatch):
    from miniglm import device
    from miniglm.config import ModelConfig
    from miniglm.model.model import MiniGLM
    from miniglm.train import mfu

    assert device.resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert device.resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(device.DeviceError, match="no CUDA GPU"):
            device.resolve_device("cuda")
    m = MiniGLM(ModelConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64))
    n = sum(p.numel() for p in m.parameters())  # the tied embedding counts once, as the LM head
    assert mfu.model_flops_per_token(m, 64) == 6 * n + 12 * 2 * 32 * 64
    monkeypatch.setenv("MINIGLM_PEAK_FLOPS", "1.5e12")
    assert mfu.peak_flops("cpu", torch.bfloat16) == (1.5e12, "MINIGLM_PEAK_FLOPS")
    monkeypatch.delenv("MINIGLM_PEAK_FLOPS")
    peak, source = mfu.peak_flops("cpu", torch.float32)
    assert peak > 1e9 and source.startswith("measured")


def test_sft_without_validation_rows_trains_without_eval(data, tmp_path):
    sft = make_sft_dir(tmp_path / "sft", data, n_val=0)
    result = train(tiny_config(sft, tmp_path / "run", mode="sft", max_steps=3, eval_interval=1))
    assert result["step"] == 3 and result["val_loss"] is None
    assert not [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "eval"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_0000003"]
