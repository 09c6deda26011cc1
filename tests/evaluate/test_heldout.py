"""Held-out loss/perplexity/bpc checked by hand on a tiny model; Q&A files; the eval report and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from miniglm.checkpoint import save_checkpoint
from miniglm.config import ModelConfig, SampleConfig
from miniglm.data import store
from miniglm.evaluate import heldout as ev
from miniglm.evaluate import qa
from miniglm.evaluate import report as rep
from miniglm.model.model import MiniGLM
from miniglm.tokenizer import train_tokenizer

CORPUS = ["天下大势，分久必合，合久必分。", "话说宝玉听了，便向黛玉笑道：妹妹今日可好些了么？",
          "孙悟空一个筋斗云，便是十万八千里。", "林冲在草料场看守，风雪交加。"] * 3
DOCS = ["宝玉笑道：妹妹好些了么？", "风雪交加，林冲看守草料场。天下大势，分久必合。",
        "孙悟空一个筋斗云，便是十万八千里。话说宝玉听了，便向黛玉笑道：今日可好？"]
CONTEXT = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, run_dir) with a saved checkpoint; context 32 tokens."""
    tok = train_tokenizer(CORPUS, vocab_size=300, min_frequency=1, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=CONTEXT)
    model = MiniGLM(cfg).eval()
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoints" / "best", model, tok, step=7)
    return model, tok, run


def write_pretrain_dir(path, tok, docs=DOCS, sha=None):
    path.mkdir(parents=True, exist_ok=True)
    ids = [t for d in docs for t in tok.encode(d) + [tok.eot_id]]
    with store.TokenWriter(path / "val.bin", tok.vocab_size) as w:
        w.write(ids)
    store.write_meta(path, {"kind": "pretrain", "vocab_size": tok.vocab_size, "eot_id": tok.eot_id,
                            "pad_id": tok.pad_id, "tokenizer_sha256": sha or tok.sha256,
                            "val_tokens": len(ids), "val_chars": sum(len(d) for d in docs)})
    return ids


def write_train_files(pre, sft, tok, pre_docs, sft_pairs, block=CONTEXT):
    """train.bin of a pretrain dir and train_ids.npy of an SFT dir (both with meta.json)."""
    write_pretrain_dir(pre, tok)
    with store.TokenWriter(pre / "train.bin", tok.vocab_size) as w:
        w.write([t for d in pre_docs for t in tok.encode(d) + [tok.eot_id]])
    sft.mkdir(parents=True, exist_ok=True)
    ids = np.full((len(sft_pairs), block + 1), tok.pad_id, dtype=np.uint16)
    for r, pair in enumerate(sft_pairs):
        row = tok.render_conversation([pair])[0][:block + 1]
        ids[r, :len(row)] = row
    store.write_rows(sft, "train", ids, np.zeros((len(ids), block), dtype=np.uint8))
    store.write_meta(sft, {"kind": "sft", "block_size": block, "vocab_size": tok.vocab_size,
                           "tokenizer_sha256": tok.sha256})


def manual_stream_nats(model, ids, block):
    """Each target t predicted from the window it falls in, one position at a time."""
    nats = []
    with torch.no_grad():
        for t in range(1, len(ids)):
            start = ((t - 1) // block) * block
            logits, _ = model(torch.tensor([ids[start:t]]))
            nats.append(-F.log_softmax(logits[0, -1].double(), -1)[ids[t]].item())
    return nats


# --------------------------------------------------------------------------- held-out loss


def test_heldout_pretrain_matches_hand_computation(tiny, tmp_path):
    model, tok, _ = tiny
    ids = write_pretrain_dir(tmp_path / "data", tok)
    assert len(ids) > 2 * CONTEXT and (len(ids) - 1) % CONTEXT != 0  # several windows, a short last one
    [res] = ev.evaluate_heldout(model, tok, tmp_path / "data", batch_size=2)
    nats = manual_stream_nats(model, ids, CONTEXT)
    assert res.tokens_scored == len(ids) - 1 == len(nats)
    assert res.windows == math.ceil((len(ids) - 1) / CONTEXT)
    assert res.loss == pytest.approx(sum(nats) / len(nats), rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(sum(nats) / len(nats)), rel=1e-5)
    chars = sum(len(d) for d in DOCS)
    assert res.chars == chars
    assert res.bpc == pytest.approx(sum(nats) / (chars * math.log(2)), rel=1e-5)
    assert res.kind == "pretrain" and str(len(ids)) in res.rule


def test_score_stream_per_token_nats(tiny):
    model, tok, _ = tiny
    ids = [t for d in DOCS for t in tok.encode(d) + [tok.eot_id]]
    per = np.full(len(ids) - 1, np.nan)
    nats, scored, _ = ev.score_stream(model, np.asarray(ids), CONTEXT, batch_size=2, per_token=per)
    assert per == pytest.approx(manual_stream_nats(model, ids, CONTEXT), rel=1e-4, abs=1e-5)
    assert scored == len(per) and per.sum() == pytest.approx(nats, rel=1e-6)


def test_heldout_text_files(tiny, tmp_path):
    model, tok, _ = tiny
    files = []
    for i, d in enumerate(DOCS):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(d, encoding="utf-8")
    [res] = ev.evaluate_heldout(model, tok, text_files=files, batch_size=3)
    ids = [t for d in DOCS for t in tok.encode(d) + [tok.eot_id]]
    nats = manual_stream_nats(model, ids, CONTEXT)
    per = np.full(len(ids) - 1, np.nan)
    assert ev.heldout_text(model, tok, files, batch_size=3, per_token=per).total_nats == pytest.approx(res.total_nats)
    assert per == pytest.approx(nats, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match=f"per_token holds 3 floats; the stream has {len(ids) - 1} targets"):
        ev.heldout_text(model, tok, files, per_token=np.zeros(3))
    assert res.tokens_scored == len(ids) - 1
    assert res.loss == pytest.approx(sum(nats) / len(nats), rel=1e-5)
    assert res.bpc == pytest.approx(sum(nats) / (sum(map(len, DOCS)) * math.log(2)), rel=1e-5)


def test_heldout_sft_scores_only_masked_tokens(tiny, tmp_path):
    model, tok, _ = tiny
    block = CONTEXT
    pairs = [("宝玉笑道", "好些了"), ("林冲", "看守草料场")]
    ids = np.full((2, block + 1), tok.pad_id, dtype=np.uint16)
    mask = np.zeros((2, block), dtype=np.uint8)
    expected_nats, expected_tokens = 0.0, 0
    for r, (q, a) in enumerate(pairs):
        row, m = tok.render_conversation([(q, a)])
        assert len(row) <= block + 1
        ids[r, :len(row)] = row
        mask[r, :len(row) - 1] = m[1:]
        with torch.no_grad():
            logits, _ = model(torch.tensor([row[:-1]]))
        logp = F.log_softmax(logits[0].double(), -1)
        for t in range(len(row) - 1):
            if m[t + 1]:
                expected_nats -= logp[t, row[t + 1]].item()
                expected_tokens += 1
    d = tmp_path / "sft"
    d.mkdir()
    store.write_rows(d, "val", ids, mask)
    store.write_meta(d, {"kind": "sft", "block_size": block, "vocab_size": tok.vocab_size,
                         "tokenizer_sha256": tok.sha256})
    [res] = ev.evaluate_heldout(model, tok, d, batch_size=1)
    assert res.tokens_scored == expected_tokens == sum(len(tok.encode(a)) + 1 for _, a in pairs)
    assert res.loss == pytest.approx(expected_nats / expected_tokens, rel=1e-5)
    assert res.chars == sum(len(a) for _, a in pairs)  # the answers' characters, end tokens aside


def test_tokenizer_mismatch_is_a_clear_error(tiny, tmp_path):
    model, tok, _ = tiny
    write_pretrain_dir(tmp_path / "data", tok, sha="0" * 64)
    with pytest.raises(ev.EvalError, match="tokenizer 000000000000"):
        ev.evaluate_heldout(model, tok, tmp_path / "data")


def test_bad_data_inputs(tiny, tmp_path):
    model, tok, _ = tiny
    with pytest.raises(ev.EvalError, match="not found"):
        ev.evaluate_heldout(model, tok, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ev.EvalError, match="no meta.json"):
        ev.evaluate_heldout(model, tok, tmp_path / "empty")
    with pytest.raises(ev.EvalError, match="missing.txt: not found"):
        ev.evaluate_heldout(model, tok, text_files=[tmp_path / "missing.txt"])
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ev.EvalError, match="not UTF-8"):
        ev.evaluate_heldout(model, tok, text_files=[tmp_path / "bad.txt"])


# --------------------------------------------------------------------------- the seen set


def test_training_characters_and_where_they_come_from(tiny, tmp_path):
    model, tok, _ = tiny
    pre, sft = tmp_path / "pre", tmp_path / "sft"
    write_train_files(pre, sft, tok, ["天下大势", "分久必合"], [("林冲", "风雪")])
    other = tmp_path / "other"
    write_pretrain_dir(other, tok, sha="f" * 64)  # another tokenizer: skipped
    chars, used = ev.training_characters([pre, sft, other, tmp_path / "gone"], tok)
    assert chars == frozenset("天下大势分久必合林冲风雪问答：")  # the chat template's characters too
    assert used == [str(pre), str(sft)]

    pre_run, sft_run = tmp_path / "runs" / "pre", tmp_path / "runs" / "sft"
    pre_run.mkdir(parents=True)
    (pre_run / "config.json").write_text(json.dumps({"data": str(pre)}), encoding="utf-8")
    ckpt = save_checkpoint(sft_run / "checkpoints" / "best", model, tok, step=1, extra={"data": str(sft)})
    (sft_run / "config.json").write_text(json.dumps({"data": str(sft), "init_from": str(pre_run)}), encoding="utf-8")
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    assert rep.training_data_dirs(ckpt, meta) == [str(sft), str(pre)]


# --------------------------------------------------------------------------- Q&A files


def write_qa(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def test_load_qa_reads_references_and_limit(tmp_path):
    p = write_qa(tmp_path / "qa.jsonl", [{"question": "甲？", "answer": "乙", "references": ["乙", "丙"]},
                                         "", {"question": "丁？", "answer": "戊"}])
    items = qa.load_qa(p)
    assert [it.references for it in items] == [["乙", "丙"], ["戊"]]
    assert [it.line for it in items] == [1, 3]
    assert len(qa.load_qa(p, limit=1)) == 1


@pytest.mark.parametrize("rows, message", [
    ([{"question": "a", "answer": "b"}, "{not json"], r"qa.jsonl:2: invalid JSON"),
    ([{"question": "a"}], r"qa.jsonl:1: missing field 'answer'"),
    ([{"answer": "a"}], r"qa.jsonl:1: missing field 'question'"),
    ([{"question": "a", "answer": " "}], r"qa.jsonl:1: field 'answer' is empty"),
    ([{"question": "a", "answer": 3}], r"qa.jsonl:1: field 'answer' must be a string"),
    ([{"question": "a", "answer": "b", "references": "b"}], r"qa.jsonl:1: field 'references'"),
    ([["a", "b"]], r"qa.jsonl:1: expected a JSON object"),
    (["", "  "], r"qa.jsonl: no Q&A items"),
])
def test_load_qa_errors(tmp_path, rows, message):
    with pytest.raises(ev.EvalError, match=message):
        qa.load_qa(write_qa(tmp_path / "qa.jsonl", rows))


def test_load_qa_missing_file(tmp_path):
    with pytest.raises(ev.EvalError, match="Q&A file not found"):
        qa.load_qa(tmp_path / "none.jsonl")


def test_answer_losses_teacher_forced_answer_tokens_only(tiny):
    model, tok, _ = tiny
    items = [qa.QAItem("宝玉", "好些了", ["好些了"]), qa.QAItem("林冲看守", "草料场", ["草料场"]),
             qa.QAItem("天下大势分久必合合久必分" * 2, "风雪", ["风雪"])]  # longer than the context
    batched, cut = qa.answer_losses(model, tok, items, batch_size=3)
    single, _ = qa.answer_losses(model, tok, items, batch_size=1)
    assert cut == 1
    for it, (nats, n), (nats1, n1) in zip(items, batched, single):
        ids, mask = tok.render_conversation([(it.question, it.answer)])
        ids, mask = ids[-(CONTEXT + 1):], mask[-(CONTEXT + 1):]
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids[:-1]]))
        logp = F.log_softmax(logits[0].double(), -1)
        want = -sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1) if mask[t + 1])
        assert n == n1 == len(tok.encode(it.answer)) + 1
        assert nats == pytest.approx(want, rel=1e-5) and nats1 == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------- reports


def test_load_report_rejects_non_reports(tmp_path):
    with pytest.raises(rep.ReportError, match="report not found"):
        rep.load_report(tmp_path / "none.json")
    (tmp_path / "a.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(rep.ReportError, match="a.json: not a MiniGLM eval report \\(invalid JSON"):
        rep.load_report(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"type": "train", "step": 1}), encoding="utf-8")
    with pytest.raises(rep.ReportError, match="b.json: not a MiniGLM eval report"):
        rep.load_report(tmp_path / "b.json")
    bad_items = {"report": "miniglm-eval", "format_version": 1,
                 "runs": [{"name": "x", "qa": {"items": [{"answer": "y"}]}}]}
    (tmp_path / "c.json").write_text(json.dumps(bad_items), encoding="utf-8")
    with pytest.raises(rep.ReportError, match=r"runs\[0\]\.qa\.items"):
        rep.load_report(tmp_path / "c.json")


def test_ranked_answers_never_repeat():
    items = [{"index": i, "rouge_l": {"f": f}} for i, f in enumerate([0.5, 0.1, 0.9, 0.1, 0.7])]
    worst, best = rep.ranked_answers(items, n=3)
    assert [r["index"] for r in worst] == [1, 3, 0]
    assert [r["index"] for r in best] == [2, 4]


def test_heldout_report_and_comparison(tiny, tmp_path):
    _, tok, run = tiny
    write_pretrain_dir(tmp_path / "data", tok)
    cfg = SampleConfig(device="cpu", dtype="float32")
    a = rep.evaluate_run(run, tmp_path / "data", [], None, cfg)
    b = rep.evaluate_run(run / "checkpoints" / "best", tmp_path / "data", [], None, cfg)
    report = rep.build_report([a, b], {"data": str(tmp_path / "data")})
    js, md = rep.write_report(report, tmp_path / "out")
    loaded = rep.load_report(js)
    assert loaded["runs"][0]["step"] == 7 and loaded["runs"][0]["name"] == run.name
    assert loaded["comparison"]["val perplexity"]["delta"] == 0.0
    text = md.read_text(encoding="utf-8")
    assert "| metric |" in text and "delta" in text and "val bits/char" in text
    assert rep.default_out(run / "checkpoints" / "best") == run / "eval"


# --------------------------------------------------------------------------- Q&A end to end

QA_ROWS = [{"question": "宝玉笑道什么？", "answer": "妹妹好些了么", "references": ["好些了么"]},
           {"question": "林冲在哪里看守？", "answer": "草料场"},
           {"question": "孙悟空一个筋斗云多远？", "answer": "十万八千里。"},
           {"question": "天下大势如何？", "answer": "分久必合，合久必分。"}]
GREEDY = ["--temperature", "0", "--max_new_tokens", "6", "--device", "cpu", "--dtype", "float32"]


def test_qa_evaluation_end_to_end(tiny, tmp_path):
    from miniglm.evaluate import metrics

    _, tok, run = tiny
    items = qa.load_qa(write_qa(tmp_path / "qa.jsonl", QA_ROWS))
    cfg = SampleConfig(temperature=0, max_new_tokens=6, device="cpu", dtype="float32")
    result = rep.evaluate_run(run, None, [], items, cfg, batch_size=2)
    s, rows = result["qa"]["summary"], result["qa"]["items"]
    assert len(rows) == s["items"] == len(QA_ROWS) and result["heldout"] == []
    for row, it in zip(rows, items):
        assert row["question"] == it.question and row["references"] == it.references
        best = metrics.rouge_l_best(row["answer"], it.references)
        assert row["rouge_l"] == {"precision": best.precision, "recall": best.recall, "f": best.f}
        assert set(row["flags"]) == set(metrics.FLAG_NAMES)
        assert row["finish_reason"] in ("eot", "stop", "length") and row["answer_tokens"] <= 6
        assert row["reference_tokens"] == len(tok.encode(it.answer)) + 1
    assert sum(s["finish_reasons"].values()) == len(QA_ROWS)
    assert s["rouge_l"]["f"] == pytest.approx(sum(r["rouge_l"]["f"] for r in rows) / len(QA_ROWS))
    nats = sum(r["reference_loss"] * r["reference_tokens"] for r in rows)
    assert s["reference_perplexity"] == pytest.approx(math.exp(nats / s["reference_tokens"]))
    assert s["flags"] == {k: sum(r["flags"][k] for r in rows) for k in metrics.FLAG_NAMES}
    assert s["speed"]["tokens_per_second"] > 0 and s["speed"]["first_token_seconds_median"] > 0
    one = s["speed"]["single_stream"]
    assert one["answers"] == 3 and one["tokens_per_second"] > 0 and one["first_token_seconds_median"] > 0
    assert 0 <= s["distinct_1"] <= 1 and 0 <= s["bleu"] <= 100 and 0 <= s["chrf"] <= 100
    assert result["qa"]["seen_set"]["source"] == "tokenizer vocabulary"  # this run names no data


def test_eval_cli_end_to_end_and_comparison(tiny, tmp_path, capsys):
    from miniglm.__main__ import main

    _, tok, run = tiny
    write_pretrain_dir(tmp_path / "data", tok)
    qa_file = write_qa(tmp_path / "qa.jsonl", QA_ROWS)
    out = tmp_path / "out"
    argv = ["eval", str(run), "--data", str(tmp_path / "data"), "--qa", str(qa_file), "--limit", "2",
            "--batch-size", "2", "--out", str(out), "--no-progress", *GREEDY]
    assert main(argv) == 0
    report = rep.load_report(out / "report.json")
    [r] = report["runs"]
    assert r["qa"]["summary"]["items"] == 2 and r["heldout"][0]["kind"] == "pretrain"
    assert report["settings"]["sample"]["temperature"] == 0 and report["settings"]["rouge_l"]["beta"] == 1.2
    assert report["comparison"] is None
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Summary" in md and "the 2 worst answers by Rouge-L" in md and "best answers" not in md
    assert "Rouge-L F" in md and "val perplexity" in md

    # two checkpoints side by side; eval answers with chat's seeded sampling by default
    run2 = tmp_path / "run2"
    torch.manual_seed(1)
    with store.TokenWriter(tmp_path / "data" / "train.bin", tok.vocab_size) as w:
        w.write(tok.encode("天下大势"))
    save_checkpoint(run2 / "checkpoints" / "best", MiniGLM(tiny[0].config), tok, step=3,
                    extra={"data": str(tmp_path / "data")})
    assert main(["eval", str(run), str(run2), "--qa", str(qa_file), "--no-progress", "--max_new_tokens", "4",
                 "--device", "cpu", "--dtype", "float32"]) == 0
    report = rep.load_report(run / "eval" / "report.json")
    assert [x["name"] for x in report["runs"]] == [run.name, "run2"]
    assert report["runs"][0]["qa"]["seen_set"]["source"] == "tokenizer vocabulary"
    assert report["runs"][1]["qa"]["seen_set"]["source"] == f"tokenizer vocabulary + training data ({tmp_path / 'data'})"
    assert report["settings"]["sample"]["temperature"] == SampleConfig().temperature > 0
    delta = report["comparison"]["Rouge-L F"]
    assert delta["delta"] == pytest.approx(delta["b"] - delta["a"])
    md = (run / "eval" / "report.md").read_text(encoding="utf-8")
    assert "delta (2 − 1)" in md and "## run2: the 1 best answers by Rouge-L" in md

    # sampled answers are reproducible: the same seed gives the same answers, one question per batch or eight
    answers = [it["answer"] for it in report["runs"][0]["qa"]["items"]]
    again = tmp_path / "again"
    assert main(["eval", str(run), "--qa", str(qa_file), "--no-progress", "--max_new_tokens", "4", "--batch-size", "1",
                 "--device", "cpu", "--dtype", "float32", "--out", str(again)]) == 0
    assert [it["answer"] for it in rep.load_report(again / "report.json")["runs"][0]["qa"]["items"]] == answers


@pytest.mark.parametrize("extra, message", [
    (["--qa", "{dir}/bad.jsonl"], "bad.jsonl:2: invalid JSON"),
    (["--qa", "{dir}/missing.jsonl"], "Q&A file not found"),
    (["--qa", "{dir}/nofield.jsonl"], "nofield.jsonl:1: missing field 'answer'"),
    (["--qa", "{dir}/empty.jsonl"], "no Q&A items"),
    (["--limit", "0", "--qa", "{dir}/bad.jsonl"], "--limit must be > 0"),
    ([], "nothing to evaluate"),
    (["--data", "{dir}/nodata"], "data directory not found"),
])
def test_eval_cli_bad_inputs(tiny, tmp_path, capsys, extra, message):
    from miniglm.__main__ import main

    _, _, run = tiny
    write_qa(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}, "{oops"])
    write_qa(tmp_path / "nofield.jsonl", [{"question": "a"}])
    write_qa(tmp_path / "empty.jsonl", [""])
    argv = ["eval", str(run), *[a.format(dir=tmp_path) for a in extra], "--no-progress", *GREEDY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("miniglm eval: error:") and message in err and "\n" not in err


def test_eval_cli_rejects_three_runs_and_documents_flags(tiny, capsys):
    from miniglm.__main__ import main
    from miniglm.cli.eval import main as eval_main

    _, _, run = tiny
    assert main(["eval", str(run), str(run), str(run), "--text", "x"]) == 2
    assert "at most two" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        eval_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--text", "--qa", "--limit", "--out", "--batch-size", "--checkpoint", "--temperature"):
        assert flag in out


COLLAPSE_QUESTIONS = ["宝玉笑道什么？", "林冲在哪里看守？", "孙悟空一个筋斗云多远？", "天下大势如何？",
                      "黛玉今日可好？", "风雪交加时林冲在做什么？"]


@pytest.mark.parametrize("collapsing", [True, False])
def test_collapse_flag_on_a_collapsing_and_a_varied_model(tiny, collapsing):
    """Two real tiny models through evaluate_qa and the report. With its attention outputs zeroed a
    model cannot see the question (each position sees only its own token), so greedy decoding gives
    every question the same answer: collapse. The same weights with attention vary their answers."""
    from miniglm.evaluate import metrics

    _, tok, _ = tiny
    torch.manual_seed(2)  # init 0.3: answers long enough (>= 4 chars) to be compared by 4-grams
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, initializer_range=0.3)
    model = MiniGLM(cfg).eval()
    if collapsing:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
    items = [qa.QAItem(q, "十万八千里。", ["十万八千里。"], i + 1) for i, q in enumerate(COLLAPSE_QUESTIONS)]
    sample = SampleConfig(temperature=0, max_new_tokens=12, device="cpu", dtype="float32")
    result = qa.evaluate_qa(model, tok, items, sample, batch_size=3, speed_probe=0)
    s, rows = result["summary"], result["items"]
    answers = [r["answer"] for r in rows]
    assert all(len(metrics.char_ngrams(a, 4)) > 0 for a in answers)  # the premise: comparable answers
    if collapsing:
        assert len(set(answers)) == 1
        assert all(r["flags"]["collapsed"] and r["collapse_share"] == 1.0 for r in rows)
        assert s["flags"]["collapsed"] == len(rows) and s["unique_answer_share"] == 0.0
    else:
        assert len(set(answers)) == len(answers)
        assert not any(r["flags"]["collapsed"] for r in rows)
        assert s["flags"]["collapsed"] == 0 and s["unique_answer_share"] == 1.0
    run = {"name": "m", "run": "r", "checkpoint": "r/checkpoints/best", "step": 1, "params": model.num_params(),
           "device": "cpu", "dtype": "float32", "heldout": [], "qa": result}
    run["summary"] = rep.summary_metrics(run)
    assert run["summary"]["unique answers (share not collapsed)"] == s["unique_answer_share"]
    assert run["summary"]["flag: collapsed (share)"] == (1.0 if collapsing else 0.0)
    md = rep.render_markdown(rep.build_report([run], {}))
    assert f"| unique answers (share not collapsed) | {0 if collapsing else 1}" in md
    shown = [line for line in md.splitlines() if "· flags: " in line]  # worst/best answers
    assert shown and all(("collapsed" in line.split("· flags: ")[1]) == collapsing for line in shown)
