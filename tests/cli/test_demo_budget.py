"""`miniglm demo --minutes N`: the plan is measured on this machine and the demo keeps to its budget.

A benchmark-style check: the achieved/budget ratio is printed (run with -s to see it); the bound
asserted is generous because the test shares its CPUs. `miniglm.train.budget`'s own tests check
the arithmetic against a fake clock.
"""

import json
import re

from miniglm.__main__ import main
from miniglm.cli.demo import plan_tail


def test_tiny_demo_keeps_to_its_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--minutes", "0.5", "--preset", "tiny", "--offline", "--out", str(out),
                 "--num-answers", "1", "--eval-limit", "2", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    plan = re.search(r"plan for 0.5 min on .*: ([\d.]+) s per step measured; pretrain (\d+) steps", printed)
    assert plan and "ETA" in printed
    took, budget = map(float, re.search(r"Demo finished in (\d+) s \(budget (\d+) s", printed).groups())
    print(f"\ntiny demo: {took:.0f} s for a {budget:.0f} s budget ({took / budget:.0%})")
    assert budget == 30 and took < 3 * budget
    for run in ("pretrain", "sft"):  # both stages trained to a time budget, not a step count
        saved = json.loads((out / "runs" / run / "config.json").read_text())
        assert saved["max_minutes"] > 0
    assert "time budget" in printed


def test_the_tail_is_cut_to_fit_a_slow_machine():
    fast = plan_tail(300, step_s=0.1, n_new=5, limit=20)
    slow = plan_tail(300, step_s=5.0, n_new=5, limit=20)
    assert fast[0] == 20 and slow[0] < 20  # fewer scored questions where each costs more
    assert slow[1] <= 0.3 * 300 + 5 * 5.0 and slow[0] >= 3


def test_the_default_demo_lets_the_recipe_choose_the_model(tmp_path, capsys, monkeypatch):
    from miniglm.train import recipe
    from miniglm.train.recipe import Rung

    ladder = (Rung("t1", 1, 16, 2, 32, 300, 3e-3), Rung("t2", 2, 32, 4, 64, 400, 2e-3))
    monkeypatch.setattr(recipe, "LADDER", ladder)  # tiny rungs: the real ladder's are minutes-sized
    out = tmp_path / "demo"
    code = main(["demo", "--minutes", "0.5", "--offline", "--out", str(out), "--num-answers", "1",
                 "--eval-limit", "2", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "=== recipe" in printed and re.search(r"-> t[12]: ", printed)
    saved = json.loads((out / "runs" / "pretrain" / "config.json").read_text())
    chosen = next(r for r in ladder if r.hidden == saved["model"]["hidden_size"])
    assert f"2/7 pretrain (recipe: {chosen.name}:" in printed
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert meta["vocab_size"] == saved["model"]["vocab_size"] <= chosen.vocab  # prepared with the rung's vocabulary
    assert (saved["batch_size"], saved["learning_rate"]) == (recipe.BATCH_SIZE, chosen.learning_rate)
