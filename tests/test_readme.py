"""README.md only names paths that exist: its annotated file tree and every repo path it quotes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
TOP = ("miniglm/", "tests/", "bench/", "scripts/", "configs/", ".ci/", "pyproject.toml", "README.md")


def tree_paths(text: str) -> list[str]:
    """Paths of the annotated tree under '## Files': `name  comment` lines, nesting by indentation."""
    block = text.split("## Files", 1)[1].split("```", 2)[1]
    paths, stack = [], []  # stack of (indent, directory)
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.strip().split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([d for _, d in stack] + [name.rstrip("/")])
        paths.append(path)
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    return paths


def quoted_paths(text: str) -> list[str]:
    """Repo paths in `code spans` and links, e.g. `miniglm/tokenizer.py` or (bench/README.md)."""
    spans = re.findall(r"`([^`\s]+)`", text) + re.findall(r"\]\(([^)\s#]+)\)", text)
    return [s.rstrip(".,:") for s in spans if s.startswith(TOP) and "*" not in s and "<" not in s]


def test_the_file_tree_exists():
    paths = tree_paths(README)
    assert len(paths) > 20  # the tree was found and parsed
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README's file tree names missing paths: {missing}"


def test_quoted_paths_exist():
    paths = quoted_paths(README)
    assert paths
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README quotes missing paths: {missing}"


def test_configs_is_the_preset_directory():
    assert (REPO / "configs").resolve() == (REPO / "miniglm" / "configs").resolve()
    assert {p.name for p in (REPO / "configs").glob("*.toml")} >= {"tiny.toml", "small.toml", "base.toml", "sft.toml"}
