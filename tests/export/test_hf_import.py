"""A Hugging Face Llama directory read as a checkpoint: `--init-from HF_DIR` continues training from
its weights, `load_checkpoint` computes what transformers computes (also for a directory transformers
itself saved), shards are merged, and every unsupported feature is a one-line error that names it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_run
from safetensors.torch import load_file, save_file
from tiny_data import make_pretrain_dir, tiny_config

from miniglm.checkpoint import CheckpointError, load_checkpoint
from miniglm.errors import UserError
from miniglm.export.hf import export_hf
from miniglm.export.source import load_source
from miniglm.tokenizer import Tokenizer
from miniglm.train.trainer import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_pretrain_dir(tmp_path_factory.mktemp("data"), n_train=60, n_val=10)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, data):
    """An exported run whose tokenizer is the one `data` was prepared with."""
    root = tmp_path_factory.mktemp("hfimport")
    run = make_run(root, Tokenizer.from_file(data / "tokenizer.json"), seed=3)
    return export_hf(load_source(run), root / "hf")


def test_init_from_a_hugging_face_directory_starts_from_its_weights(hf_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(data, out, init_from=str(hf_dir), max_steps=1, learning_rate=1e-12, min_lr=0.0,
                      warmup_steps=0, eval_interval=0, checkpoint_interval=1)
    train(cfg)
    assert f"initialised from {hf_dir}" in capsys.readouterr().out
    trained = load_checkpoint(out, which="latest")
    start = load_checkpoint(hf_dir)
    assert trained.model.config == start.model.config and trained.model.config.hidden_size == 64
    for (name, a), b in zip(trained.model.state_dict().items(), start.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8, msg=name)  # one step at lr 1e-12 moves nothing
    json.loads((out / "config.json").read_text())  # a normal MiniGLM run from here on


def test_init_from_with_data_of_another_tokenizer_says_how_to_prepare(hf_dir, tmp_path):
    other = make_pretrain_dir(tmp_path / "other", n_train=30, n_val=5, seed=9)
    with pytest.raises(CheckpointError, match=f"--tokenizer {hf_dir / 'tokenizer.json'}"):
        train(tiny_config(other, tmp_path / "run", init_from=str(hf_dir), max_steps=1))


def test_a_directory_saved_by_transformers_loads_with_the_same_logits(tmp_path, tokenizer):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=96, rms_norm_eps=1e-5,
        rope_theta=20000.0, tie_word_embeddings=False, initializer_range=0.2)
    ref = transformers.LlamaForCausalLM(hf_cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf" / "tokenizer.json")
    loaded = load_checkpoint(tmp_path / "hf")
    c = loaded.model.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.rope_theta, c.tie_word_embeddings) == (8, 2, 20000.0, False)
    assert loaded.meta["source"] == "huggingface" and loaded.tokenizer.sha256 == tokenizer.sha256
    x = torch.randint(0, tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], ref(input_ids=x).logits, rtol=1e-4, atol=1e-5)


def test_sharded_weights_are_merged(hf_dir, tmp_path):
    d = tmp_path / "sharded"
    shutil.copytree(hf_dir, d)
    tensors = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(d / file), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    got, want = load_checkpoint(d).model.state_dict(), load_checkpoint(hf_dir).model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


CONFIG_CHANGES = [
    ({"attention_bias": True}, "attention_bias=true is not supported"),
    ({"mlp_bias": True}, "mlp_bias=true is not supported"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling of type 'linear' is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters of type 'yarn'"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5 is not supported"),
    ({"head_dim": 8}, "head_dim=8 x 4 heads != hidden_size=64"),
    ({"model_type": "qwen2"}, "model_type 'qwen2' is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"num_key_value_heads": 3}, "3 does not divide num_attention_heads=4"),
    ({"vocab_size": 10}, "tokenizer.json has"),
]


@pytest.mark.parametrize("change,message", CONFIG_CHANGES, ids=[m for _, m in CONFIG_CHANGES])
def test_unsupported_configs_are_refused_with_the_reason(hf_dir, tmp_path, change, message):
    d = tmp_path / "hf"
    shutil.copytree(hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        load_checkpoint(d)
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_missing_pieces_and_foreign_tensors_are_refused(hf_dir, tmp_path):
    d = tmp_path / "hf"
    shutil.copytree(hf_dir, d)
    weights = load_file(str(d / "model.safetensors"))
    save_file({**weights, "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected model\.layers\.0\.self_attn\.q_proj\.bias"):
        load_checkpoint(d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(UserError, match="a pickle, which MiniGLM never loads"):
        load_checkpoint(d)
    (d / "pytorch_model.bin").rename(d / "model.safetensors")
    (d / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_checkpoint(d)
