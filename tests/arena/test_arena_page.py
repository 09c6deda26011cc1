"""The arena page in headless Chromium: a battle end to end on two tiny local checkpoints
(question in, both panes fill, vote, names revealed, the leaderboard shows the battle)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from arena_fakes import free_port, make_checkpoint

from miniglm.config import SampleConfig
from miniglm.serve.arena.battle import Arena
from miniglm.serve.arena.contestants import load_contestants
from miniglm.serve.arena.votes import VoteLog, read_votes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
REPO = Path(__file__).resolve().parents[2]
WAIT_MS = 90_000  # a shared 2-core machine can be slow to stream even a tiny model


@pytest.fixture
def arena_page(tmp_path):
    """`miniglm arena` on two tiny checkpoints, started as a real process; yields (url, votes file)."""
    for name, seed in (("alpha", 0), ("beta", 1)):
        make_checkpoint(tmp_path, name, seed)
    port, votes = free_port(), tmp_path / "votes.jsonl"
    argv = [sys.executable, "-m", "miniglm", "arena", f"alpha={tmp_path / 'alpha'}", f"beta={tmp_path / 'beta'}",
            "--port", str(port), "--votes", str(votes), "--max-new-tokens", "12", "--device", "cpu",
            "--dtype", "float32", "--seed", "0"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        banner = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert f"arena with 2 contestants on http://127.0.0.1:{port}" in banner, banner + proc.stdout.read()
        assert "alpha: local checkpoint" in banner
        yield f"http://127.0.0.1:{port}/", votes
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the server closes and the command exits
        try:
            assert proc.wait(timeout=30) == 130
        finally:
            proc.kill()
            proc.stdout.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed")
def test_a_battle_end_to_end_in_the_browser(arena_page):
    from playwright.sync_api import expect, sync_playwright

    url, votes_path = arena_page
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(url, wait_until="domcontentloaded")  # Gradio keeps a connection open: never networkidle
            question = tab.locator("#anonymous-question textarea")
            question.wait_for(timeout=WAIT_MS)
            question.fill("天地玄黄")
            tab.click("#anonymous-send")
            status = tab.locator("#anonymous-status")
            expect(status).to_contain_text("Which answer is better?", timeout=WAIT_MS)
            panes = {side: tab.locator(f"#anonymous-{side} [data-testid='bot']") for side in ("left", "right")}
            shown = {side: pane.inner_text().strip() for side, pane in panes.items()}
            expect(tab.locator("#anonymous-left [data-testid='user']")).to_have_text("天地玄黄")
            assert "Model A:" not in tab.inner_text("#anonymous-left")  # names hidden before the vote

            tab.click("#anonymous-vote-left")
            expect(status).to_contain_text("Vote recorded", timeout=WAIT_MS)
            [vote] = read_votes(votes_path).votes
            assert (vote["vote"], vote["mode"], vote["anonymous"]) == ("left", "anonymous", True)
            assert {vote["left"], vote["right"]} == {"alpha", "beta"}
            assert shown == {side: vote["answers"][side].strip() for side in ("left", "right")}
            assert any(shown.values())  # the panes filled with what the models generated
            expect(status).to_contain_text(f"Model A was {vote['left']}, model B was {vote['right']}")
            expect(tab.locator("#anonymous-right")).to_contain_text(f"Model B: {vote['right']}")

            tab.get_by_role("tab", name="Leaderboard").click()
            tab.click("#leaderboard-refresh")
            table = tab.locator("#leaderboard-table")
            expect(table).to_contain_text("1 votes counted (1 anonymous)", timeout=WAIT_MS)
            expect(table).to_contain_text("alpha")
            expect(table).to_contain_text("beta")
            assert "1-0-0" in table.inner_text() and "0-0-1" in table.inner_text()
        finally:
            browser.close()


def test_the_page_reads_the_same_leaderboard_as_the_command(tmp_path):
    from test_arena_votes import record

    from miniglm.serve.arena.leaderboard import build_leaderboard, format_markdown
    from miniglm.serve.arena.page import leaderboard_view

    log = VoteLog(tmp_path / "votes.jsonl")
    log.extend([record(i, vote=v) for i, v in enumerate(["left", "left", "right", "tie"])]
               + [record(9, mode="named", anonymous=False)])
    arena = Arena(load_contestants(["alice=http://127.0.0.1:9", "bob=http://127.0.0.1:9"], SampleConfig()), log)
    markdown, win, counts = leaderboard_view(arena, include_named=False, rounds=100, seed=0)
    assert markdown == format_markdown(build_leaderboard(read_votes(log.path).votes, rounds=100, seed=0))
    assert "4 votes counted (4 anonymous); 1 not counted" in markdown and "| 1 | alice |" in markdown
    assert win.axes[0].images[0].get_array()[0, 1] == pytest.approx(2.5 / 4)  # alice vs bob, the tie half
    assert counts.axes[0].images[0].get_array()[1, 0] == 4
    with open(log.path, "ab") as f:
        f.write(b'{"ts": "torn')
    markdown, _, _ = leaderboard_view(arena, include_named=True, rounds=100, seed=0)
    assert markdown.startswith(f"> ⚠️ {Path(log.path)}:6: skipped a torn last line")
    assert "5 votes counted (4 anonymous, 1 named)" in markdown
