"""`miniglm sample` and `miniglm chat` end to end on a tiny random checkpoint in a temporary run."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from miniglm.__main__ import main
from miniglm.checkpoint import load_checkpoint, save_checkpoint
from miniglm.config import ModelConfig, SampleConfig
from miniglm.generate import text as textgen
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

FLAGS = ["--device", "cpu", "--dtype", "float32", "--max_new_tokens", "12"]


def make_run(root: Path, mode: str) -> Path:
    corpus = ["天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。", "问：你好\n答：你好！", "寒来暑往，秋收冬藏。"] * 3
    tok = train_tokenizer(corpus, vocab_size=300, min_frequency=2, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    run = root / f"run_{mode}"
    save_checkpoint(run / "checkpoints" / "step_0000001", MiniGLM(cfg), tok, step=1, extra={"mode": mode})
    return run


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "sft")


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "pretrain")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sample_one_prompt_writes_jsonl_and_reports_speed(sft_run, tmp_path, capsys):
    out = tmp_path / "out" / "samples.jsonl"
    assert main(["sample", str(sft_run), "--prompt", "天地", "--temperature", "0", "--output", str(out), *FLAGS]) == 0
    printed = capsys.readouterr().out
    [rec] = read_jsonl(out)
    loaded = load_checkpoint(sft_run)
    cfg = SampleConfig(temperature=0, max_new_tokens=12)
    want = textgen.complete(loaded.model, loaded.tokenizer, "天地", cfg)
    assert rec["text"] == want.text and rec["new_tokens"] == len(want.token_ids) == 12
    assert rec["prompt"] == "天地" and rec["finish_reason"] == "length" and rec["tokens_per_second"] > 0
    assert "天地" + want.text in printed
    assert re.search(r"1 sample\(s\): 12 tokens, \d+ chars in [\d.]+ s -> [\d.]+ tokens/s, [\d.]+ chars/s", printed)
    assert not list(out.parent.glob("*.tmp*"))


def test_sample_prompt_file_several_samples_are_reproducible(sft_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("天地\n\n宇宙洪荒\n", encoding="utf-8")
    out = tmp_path / "s.jsonl"
    argv = ["sample", str(sft_run), "--prompt-file", str(prompts), "--num-samples", "2", "--temperature", "1.0",
            "--seed", "5", "--batch-size", "3", "--output", str(out), *FLAGS]
    assert main(argv) == 0
    recs = read_jsonl(out)
    assert [(r["prompt_index"], r["sample"], r["seed"]) for r in recs] == [(0, 0, 5), (0, 1, 6), (1, 0, 5), (1, 1, 6)]
    assert recs[0]["text"] != recs[1]["text"]
    # sample 1 of prompt 2 was drawn with seed 6 inside a batch: the same as alone with --seed 6
    alone = tmp_path / "alone.jsonl"
    assert main(["sample", str(sft_run), "--prompt", "宇宙洪荒", "--temperature", "1.0", "--seed", "6",
                 "--output", str(alone), *FLAGS]) == 0
    assert read_jsonl(alone)[0]["text"] == recs[3]["text"]
    capsys.readouterr()


def test_sample_chat_mode_and_stop_string(sft_run, tmp_path):
    out = tmp_path / "c.jsonl"
    assert main(["sample", str(sft_run), "--chat", "--prompt", "你好", "--temperature", "0", "--output", str(out),
                 *FLAGS]) == 0
    loaded = load_checkpoint(sft_run)
    want = textgen.answer(loaded.model, loaded.tokenizer, "你好", SampleConfig(temperature=0, max_new_tokens=12))
    [rec] = read_jsonl(out)
    assert rec["text"] == want.text and rec["chat"] is True
    assert len(want.text) > 3
    stop = want.text[2:4]
    assert main(["sample", str(sft_run), "--chat", "--prompt", "你好", "--temperature", "0", "--stop", stop,
                 "--output", str(out), *FLAGS]) == 0
    [rec] = read_jsonl(out)
    assert rec["text"] == want.text[:want.text.find(stop)] and rec["finish_reason"] == "stop"


@pytest.mark.parametrize("case", ["missing_run", "no_checkpoint", "missing_file", "empty_file"])
def test_sample_errors_are_one_line(case, sft_run, tmp_path, capsys):
    run, extra = str(sft_run), []
    if case == "missing_run":
        run = str(tmp_path / "nope")
    elif case == "no_checkpoint":
        (tmp_path / "empty_run").mkdir()
        run = str(tmp_path / "empty_run")
    elif case == "missing_file":
        extra = ["--prompt-file", str(tmp_path / "missing.txt")]
    else:
        (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
        extra = ["--prompt-file", str(tmp_path / "blank.txt")]
    assert main(["sample", run, *extra, *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miniglm sample: error:") and "\n" not in err
    assert {"missing_run": "not found", "no_checkpoint": "no complete checkpoint",
            "missing_file": "prompt file not found", "empty_file": "no prompts"}[case] in err


def chat(run: Path, lines: str, monkeypatch, capsys, *extra: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    rc = main(["chat", str(run), "--temperature", "0", *FLAGS, *extra])
    return rc, capsys.readouterr().out


def prompt_sizes(out: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[prompt (\d+) tokens", out)]


def test_chat_keeps_history_and_reset_clears_it(sft_run, monkeypatch, capsys):
    loaded = load_checkpoint(sft_run)
    tok = loaded.tokenizer
    first = textgen.answer(loaded.model, tok, "你好", SampleConfig(temperature=0, max_new_tokens=12))
    rc, out = chat(sft_run, "你好\n天地\n/reset\n天地\n/exit\n你好\n", monkeypatch, capsys)
    assert rc == 0
    assert "chat mode" in out and "[conversation cleared]" in out
    assert first.text in out
    alone = len(tok.render_prompt([], "天地"))
    assert prompt_sizes(out) == [len(tok.render_prompt([], "你好")),
                                 len(tok.render_prompt([("你好", first.text)], "天地")), alone]
    assert out.count("[prompt") == 3  # nothing after /exit


def test_chat_exits_cleanly_at_end_of_input_and_drops_old_turns(sft_run, monkeypatch, capsys):
    rc, out = chat(sft_run, "天地玄黄宇宙洪荒\n" * 4, monkeypatch, capsys)
    assert rc == 0 and out.count("[prompt") == 4
    assert "oldest turn(s) no longer fit the context" in out  # 64-token context, long turns


def test_chat_complete_mode_for_pretrained_checkpoints(pretrain_run, monkeypatch, capsys):
    loaded = load_checkpoint(pretrain_run)
    want = textgen.complete(loaded.model, loaded.tokenizer, "天地", SampleConfig(temperature=0, max_new_tokens=12))
    rc, out = chat(pretrain_run, "天地\n天地\n/bogus\n", monkeypatch, capsys)
    assert rc == 0 and "complete mode" in out and "unknown command /bogus" in out
    assert prompt_sizes(out) == [len(loaded.tokenizer.encode("天地"))] * 2  # no history in complete mode
    assert want.text in out
    rc, out = chat(pretrain_run, "你好\n", monkeypatch, capsys, "--mode", "chat")
    assert "chat mode" in out


def test_a_prompt_cut_to_the_context_is_said_once_on_stderr(sft_run, tmp_path, capsys):
    long = "天地玄黄宇宙洪荒" * 40  # far beyond the 64-token context
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(sft_run), "--prompt", long, "--num-samples", "2", "--temperature", "0",
                 "--output", str(out), *FLAGS]) == 0
    err = capsys.readouterr().err
    assert err.count("note: prompt 1 has") == 1 and "tokens are dropped" in err  # once, not per sample
    assert main(["sample", str(sft_run), "--prompt", "天地", "--output", str(out), *FLAGS]) == 0
    assert "note:" not in capsys.readouterr().err  # a prompt that fits says nothing
