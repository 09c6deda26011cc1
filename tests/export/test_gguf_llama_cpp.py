"""llama.cpp itself on an exported GGUF: the same token ids as MiniGLM's tokenizer for ~1000 random
and adversarial strings, and the same greedy tokens (bench/gguf_parity.py does the full run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from miniglm.export.source import load_source

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (a source build: pip install "
                                        "llama-cpp-python); bench/gguf_parity.py runs the same comparison")


def load_bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "gguf_parity.py"
    spec = importlib.util.spec_from_file_location("gguf_parity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_llama_cpp_tokenizes_and_generates_like_miniglm(run_dir, tmp_path, capsys):
    bench = load_bench()
    bad, total, results = bench.run(load_source(run_dir), "f32", n_strings=1000, n_tokens=16, seed=1,
                                    workdir=tmp_path)
    printed = capsys.readouterr().out
    assert total == 1000 and bad == 0, printed
    assert "1000/1000 identical detokenized text" in printed
    # f32 weights and cache: only summation order differs, so logits agree to ~1e-5 of their ~5 range,
    # and greedy tokens may part only where MiniGLM's two best logits are that close (a tie).
    assert max(r.max_diff for r in results) < 1e-3, printed
    assert all(r.same or r.tie_gap < 1e-3 for r in results), printed
    assert sum(r.same for r in results) >= len(results) - 1, printed
