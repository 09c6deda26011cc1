"""`miniglm export --format gguf`: the file read back with `gguf` holds every tensor of the checkpoint
(exactly, or exactly as f16/q8_0 encode it) and the metadata as written, and a plain re-implementation
of llama.cpp's `llama` graph (adjacent-pair rotary) on the file's tensors gives MiniGLM's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_run
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import normalizers, pre_tokenizers

from miniglm.__main__ import main
from miniglm.checkpoint import load_checkpoint
from miniglm.export.gguf import deinterleave_rotary, export_gguf, gguf_name, read_gguf, vocabulary
from miniglm.export.hf import chat_template
from miniglm.export.output import ExportError
from miniglm.export.source import load_source
from miniglm.tokenizer import Tokenizer

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def files(run_dir, tmp_path_factory):
    src, root = load_source(run_dir), tmp_path_factory.mktemp("gguf")
    return {dtype: export_gguf(src, root / f"model-{dtype}.gguf", dtype=dtype) for dtype in ("f32", "f16", "q8_0")}


def test_metadata_is_as_written(files, run_dir, tokenizer):
    meta, _ = read_gguf(files["f16"])
    cfg = load_checkpoint(run_dir).model.config
    expected = {
        "general.architecture": "llama", "general.name": "run", "general.file_type": 1,
        "llama.context_length": 128, "llama.embedding_length": 64, "llama.block_count": 2,
        "llama.feed_forward_length": 96, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16, "llama.rope.freq_base": 500.0, "llama.vocab_size": cfg.vocab_size,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": tokenizer.eot_id, "tokenizer.ggml.eos_token_id": tokenizer.eot_id,
        "tokenizer.ggml.padding_token_id": tokenizer.pad_id, "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": chat_template("<|endoftext|>"),
    }
    assert {k: meta[k] for k in expected} == expected
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert meta["tokenizer.ggml.tokens"] == [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    control = {tokenizer.eot_id, tokenizer.pad_id}
    assert meta["tokenizer.ggml.token_type"] == [gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL
                                                 for i in range(tokenizer.vocab_size)]
    merges = json.loads(tokenizer.to_json())["model"]["merges"]
    assert meta["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in merges]
    assert len(merges) > 50


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_every_tensor_reads_back_as_the_checkpoint(files, run_dir, dtype):
    _, tensors = read_gguf(files[dtype])
    model = load_checkpoint(run_dir).model
    cfg = model.config
    expected = {n: t for n, t in model.state_dict().items() if n != "lm_head.weight"}  # tied: not stored
    assert sorted(tensors) == sorted(gguf_name(n) for n in expected)
    for name, t in expected.items():
        data, kind = tensors[gguf_name(name)]
        got = torch.from_numpy(data)
        if ".q_proj." in name or ".k_proj." in name:
            got = deinterleave_rotary(got, cfg.num_attention_heads if ".q_proj." in name else cfg.num_key_value_heads)
        if t.ndim == 1 or dtype == "f32":
            assert kind == "F32" and torch.equal(got, t), name
        elif dtype == "f16":
            assert kind == "F16" and torch.equal(got, t.half().float()), name
        else:  # q8_0: exactly what Q8_0 encodes (blocks of 32 with an f16 scale), and close to the original
            assert kind == "Q8_0", name
            q = gguf.quants.dequantize(gguf.quants.quantize(t.numpy(), gguf.GGMLQuantizationType.Q8_0),
                                       gguf.GGMLQuantizationType.Q8_0)
            if ".q_proj." not in name and ".k_proj." not in name:
                assert torch.equal(got, torch.from_numpy(q)), name
            assert (got - t).abs().max() <= t.abs().max() / 127 + 1e-6, name


def llama_cpp_reference(meta: dict, tensors: dict, ids: list[int]) -> np.ndarray:
    """Logits (T, V) as llama.cpp's `llama` graph computes them from the file alone, in float64:
    rotary on ADJACENT pairs (its rope mode 0), grouped-query heads shared as h // (H / K)."""
    W = {n: a.astype(np.float64) for n, (a, _) in tensors.items()}
    C, H, K = (meta[f"llama.{k}"] for k in ("embedding_length", "attention.head_count", "attention.head_count_kv"))
    eps, theta, D, T = meta["llama.attention.layer_norm_rms_epsilon"], meta["llama.rope.freq_base"], C // H, len(ids)
    angle = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)[None, :]  # (T, D/2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]

    def rope(v):  # (T, heads, D)
        out = np.empty_like(v)
        out[..., 0::2] = v[..., 0::2] * cos - v[..., 1::2] * sin
        out[..., 1::2] = v[..., 0::2] * sin + v[..., 1::2] * cos
        return out

    def norm(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    x = W["token_embd.weight"][ids]  # (T, C)
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(meta["llama.block_count"]):
        b = f"blk.{i}."
        h = norm(x, W[b + "attn_norm.weight"])
        q = rope((h @ W[b + "attn_q.weight"].T).reshape(T, H, D))
        k = np.repeat(rope((h @ W[b + "attn_k.weight"].T).reshape(T, K, D)), H // K, axis=1)
        v = np.repeat((h @ W[b + "attn_v.weight"].T).reshape(T, K, D), H // K, axis=1)
        s = np.where(causal, np.einsum("thd,shd->hts", q, k) / np.sqrt(D), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        y = np.einsum("hts,shd->thd", p / p.sum(-1, keepdims=True), v).reshape(T, C)
        x = x + y @ W[b + "attn_output.weight"].T
        h = norm(x, W[b + "ffn_norm.weight"])
        gate = h @ W[b + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ W[b + "ffn_up.weight"].T)) @ W[b + "ffn_down.weight"].T
    return norm(x, W["output_norm.weight"]) @ W.get("output.weight", W["token_embd.weight"]).T


@pytest.mark.parametrize("dtype,atol", [("f32", 1e-4), ("q8_0", 0.5)])
def test_llama_cpp_graph_on_the_file_gives_miniglm_logits(files, run_dir, tokenizer, dtype, atol):
    meta, tensors = read_gguf(files[dtype])
    ids = tokenizer.encode("问：天地玄黄是什么？\n答：宇宙洪荒。The quick brown fox 😀")
    with torch.no_grad():
        want = load_checkpoint(run_dir).model(torch.tensor([ids]))[0][0].double().numpy()
    got = llama_cpp_reference(meta, tensors, ids)
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).mean() > (0.999 if dtype == "f32" else 0.85)


def test_a_separate_lm_head_is_written_as_output_and_used(tmp_path, tokenizer):
    """The budget recipe trains untied heads: the file carries `output.weight`, and the graph uses it."""
    run = make_run(tmp_path, tokenizer, seed=2, tie_word_embeddings=False)
    meta, tensors = read_gguf(export_gguf(load_source(run), tmp_path / "untied.gguf", dtype="f32"))
    model = load_checkpoint(run).model
    assert torch.equal(torch.from_numpy(tensors["output.weight"][0]), model.lm_head.weight.detach())
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    ids = tokenizer.encode("问：林冲是谁？\n答：豹子头。")
    with torch.no_grad():
        want = model(torch.tensor([ids]))[0][0].double().numpy()
    np.testing.assert_allclose(llama_cpp_reference(meta, tensors, ids), want, atol=1e-4, rtol=0)


def test_tokenizers_llama_cpp_would_split_differently_are_refused(tokenizer):
    with_normalizer = Tokenizer(HFTokenizer.from_str(tokenizer.hf.to_str()))
    with_normalizer.hf.normalizer = normalizers.NFKC()
    with pytest.raises(ExportError, match="it has a normalizer"):
        vocabulary(with_normalizer, tokenizer.vocab_size)
    metaspace = Tokenizer(HFTokenizer.from_str(tokenizer.hf.to_str()))
    metaspace.hf.pre_tokenizer = pre_tokenizers.Metaspace()
    with pytest.raises(ExportError, match="pre-tokenizer is not ByteLevel"):
        vocabulary(metaspace, tokenizer.vocab_size)


def test_cli_infers_gguf_from_the_suffix_and_refuses_bad_dtypes(run_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["export", str(run_dir), "--out", str(out), "--dtype", "q8_0"]) == 0
    assert "(gguf, q8_0" in capsys.readouterr().out
    assert read_gguf(out)[0]["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    before = out.read_bytes()
    assert main(["export", str(run_dir), "--out", str(out), "--format", "gguf"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x.gguf"), "--dtype", "q4_0"]) == 2
    assert "--dtype q4_0 is not supported for --format gguf" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_a_failure_mid_write_leaves_the_previous_file(run_dir, tmp_path, monkeypatch):
    out = export_gguf(load_source(run_dir), tmp_path / "m.gguf", dtype="f32")
    before = out.read_bytes()

    def broken(self, *args, **kwargs):  # header and metadata are on disk by then
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(load_source(run_dir), out, dtype="f16", overwrite=True)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
