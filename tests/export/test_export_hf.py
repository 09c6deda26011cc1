"""`miniglm export --format hf`: the directory loads offline in transformers and computes what MiniGLM
computes (logits, greedy generations), and its chat template yields exactly `miniglm chat`'s ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_run

from miniglm.__main__ import main
from miniglm.checkpoint import load_checkpoint
from miniglm.config import SampleConfig
from miniglm.evaluate.report import build_report, write_report
from miniglm.export.hf import export_hf
from miniglm.export.source import load_source
from miniglm.generate import engine
from miniglm.generate import text as textgen

transformers = pytest.importorskip("transformers")


def load_hf(path: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export_hf(load_source(run_dir), tmp_path_factory.mktemp("hf") / "model")


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_after_offline_load(tmp_path, tokenizer, tie, offline):
    run = make_run(tmp_path, tokenizer, seed=1, tie_word_embeddings=tie)
    out = export_hf(load_source(run), tmp_path / "hf")
    ours = load_checkpoint(run).model
    hf, _ = load_hf(out)
    c = hf.config
    assert (c.num_key_value_heads, c.rms_norm_eps, c.tie_word_embeddings) == (2, 1e-6, tie)
    assert c.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    x = torch.randint(0, tokenizer.vocab_size, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, ours(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_greedy_generations_are_equal(exported, run_dir, tokenizer, penalty, offline):
    ours = load_checkpoint(run_dir).model
    hf, _ = load_hf(exported)
    cfg = SampleConfig(temperature=0, max_new_tokens=24, repetition_penalty=penalty)
    lengths = []
    for prompt in ["天地玄黄", "问：你好\n答：", "The quick"]:
        ids = tokenizer.encode(prompt)
        [want] = engine.generate(ours, [ids], cfg, eot_id=tokenizer.eot_id)
        x = torch.tensor([ids])
        got = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                          repetition_penalty=penalty)[0, len(ids):].tolist()
        if got and got[-1] == tokenizer.eot_id:
            got = got[:-1]  # transformers keeps the end token; MiniGLM's completion stops before it
        assert got == want.tokens, prompt
        lengths.append(len(got))
    assert max(lengths) >= 10  # the comparison covered real continuations, not only an immediate end


CONVERSATIONS = [
    ([], "你好"),
    ([], "一加一等于几？"),
    ([("你好", "你好！有什么可以帮你？")], "天地玄黄是什么"),
    ([("一加一等于几？", "一加一等于二。"), ("The quick brown fox?", "jumps over 2 lazy dogs 😀")], "再说一遍"),
]


@pytest.mark.parametrize("history,question", CONVERSATIONS)
def test_chat_template_gives_the_ids_miniglm_chat_feeds(exported, tokenizer, history, question):
    _, hf_tok = load_hf(exported)
    messages = [m for q, a in history for m in ({"role": "user", "content": q},
                                                  {"role": "assistant", "content": a})]
    messages.append({"role": "user", "content": question})
    got = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    want, dropped = textgen.chat_prompt(tokenizer, history, question, context=128, max_new_tokens=16)
    assert dropped == 0 and got == want


def test_tokenizer_files_and_chat_template_rules(exported, tokenizer):
    _, hf_tok = load_hf(exported)
    assert (hf_tok.bos_token, hf_tok.eos_token, hf_tok.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    text = "天地 玄黄<|endoftext|>ok  \n😀"
    assert hf_tok.encode(text) == tokenizer.encode(text)  # no BOS added, special tokens split the same way
    assert hf_tok.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    rendered = hf_tok.apply_chat_template([{"role": "user", "content": "问题"}, {"role": "assistant", "content": "答案"}],
                                          tokenize=False)
    assert rendered == "问：问题\n答：答案<|endoftext|>"
    with pytest.raises(Exception, match="no system role"):
        hf_tok.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])
    gen = json.loads((exported / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"]) == (tokenizer.eot_id, tokenizer.pad_id)


def test_model_card_has_the_run_config_and_eval_figures(tmp_path, tokenizer):
    run = make_run(tmp_path, tokenizer)
    ckpt = run / "checkpoints" / "step_0000007"
    result = {"name": "run", "run": str(run), "checkpoint": str(ckpt), "step": 7, "params": 1, "device": "cpu",
              "dtype": "float32",
              "heldout": [], "qa": None, "summary": {"val perplexity": 12.345}}
    write_report(build_report([result], {}), run / "eval")
    card = (export_hf(load_source(run), tmp_path / "hf") / "README.md").read_text(encoding="utf-8")
    assert "step 7 of run `run`" in card and "| learning_rate | 0.0003 |" in card
    assert "| val perplexity | 12.35 |" in card or "| val perplexity | 12.345 |" in card
    assert "not on the exported checkpoint" not in card and '"block_size"' in card


def test_cli_bad_inputs_are_one_line_errors_and_write_nothing(run_dir, tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    cases = [
        (["export", str(tmp_path / "empty_run"), "--out", str(tmp_path / "a")], "no complete checkpoint"),
        (["export", str(run_dir), "--out", str(tmp_path / "b"), "--dtype", "q8_0"], "--dtype q8_0 is not supported"),
        (["export", str(run_dir), "--out", str(tmp_path / "c.gguf"), "--dtype", "bf16"], "--format gguf"),
        (["export", str(run_dir), "--out", str(run_dir), "--overwrite"], "contains the checkpoint"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_run"]


def test_cli_existing_output_needs_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(run_dir), "--out", str(out), "--overwrite", "--dtype", "bf16"]) == 0
    assert "(hf, bf16" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary or old copy left behind


TF4 = os.environ.get("MINIGLM_TRANSFORMERS4")  # a --target install of transformers 4.x (+ its tokenizers)
TF4_SCRIPT = """
import json, sys, torch, transformers
m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
t = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
x = torch.tensor([json.loads(sys.argv[2])])
with torch.no_grad():
    logits = m(input_ids=x).logits[0].tolist()
chat = t.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)
print(json.dumps({"version": transformers.__version__, "theta": m.config.rope_theta, "logits": logits, "chat": chat}))
"""


@pytest.mark.skipif(not TF4, reason="set MINIGLM_TRANSFORMERS4 to a directory holding transformers 4.x")
def test_export_reads_correctly_in_transformers_4(exported, run_dir, tokenizer):
    ids = tokenizer.encode("天地玄黄，宇宙洪荒")
    env = {**os.environ, "PYTHONPATH": TF4, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", TF4_SCRIPT, str(exported), json.dumps(ids)], env=env,
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["version"].startswith("4.") and res["theta"] == 500.0
    assert res["chat"] == tokenizer.render_prompt([], "你好")
    with torch.no_grad():
        want = load_checkpoint(run_dir).model(torch.tensor([ids]))[0][0]
    torch.testing.assert_close(torch.tensor(res["logits"]), want, rtol=1e-4, atol=1e-5)


def test_a_failure_mid_export_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
    import miniglm.export.hf as hf

    def broken_card(*args, **kwargs):  # everything but the card is written by then
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf, "render_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        export_hf(load_source(run_dir), tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []
