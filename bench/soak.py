"""Soak test of crash recovery: kill -9 a training run at random moments, resume it each time, and
compare the final weights (and logged losses) with an uninterrupted run of the same config.

    python bench/soak.py                 # 20 kills, tiny model, prints the verdict
    python bench/soak.py --kills 5 --seed 1

Checkpoints are written every step, so kills land in the middle of checkpoint writes too. Each
`miniglm train` is its own process (`python -m miniglm`); a kill is SIGKILL at a uniformly random
time after start. Exit code 0 if the weights are bit-identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_data import make_pretrain_dir  # noqa: E402  (the tests' real prepared-data writer)

from miniglm import checkpoint as ckpt  # noqa: E402
from miniglm.train.run import read_metrics  # noqa: E402

FLAGS = ["--config", "tiny", "--device", "cpu", "--dtype", "float32", "--checkpoint_interval", "1",
         "--eval_interval", "10", "--log_interval", "1", "--keep_last", "2"]


def train_cmd(data: Path, out: Path, steps: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "miniglm", "train", *FLAGS, "--data", str(data), "--out", str(out),
           "--max_steps", str(steps)]
    return cmd + (["--resume"] if resume else ["--overwrite"])


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run, which="latest").model.state_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=40, help="max_steps of the run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="miniglm-soak-"))
    data = make_pretrain_dir(root / "data")
    t0 = time.perf_counter()
    subprocess.run(train_cmd(data, root / "whole", args.steps, False), check=True, capture_output=True)
    whole = time.perf_counter() - t0
    print(f"uninterrupted run: {whole:.1f} s", flush=True)
    run, kills, started, resumes = root / "killed", 0, False, []
    while kills < args.kills:
        resume = started and bool(ckpt.list_checkpoints(run))
        proc = subprocess.Popen(train_cmd(data, run, args.steps, resume), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        started = True
        delay = rng.uniform(0.5, 0.6 * whole)  # startup (imports) included: some kills land before any step
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            steps = [c.name for c in ckpt.list_checkpoints(run)]
            resumes.append(steps[-1] if steps else "none")
            print(f"kill {kills:2d} after {delay:4.1f} s; latest complete checkpoint: {resumes[-1]}", flush=True)
            continue
        if proc.returncode != 0:
            print(f"a run failed on its own (exit {proc.returncode}): {proc.stderr.read().decode()[-500:]}")
            return 1
        if ckpt.list_checkpoints(run)[-1].name == f"step_{args.steps:07d}":
            print(f"the run finished before kill {kills + 1}; starting over to place the remaining kills")
            started = False
    rc = subprocess.run(train_cmd(data, run, args.steps, bool(ckpt.list_checkpoints(run))), capture_output=True)
    if rc.returncode != 0:
        print(f"final resume failed (exit {rc.returncode}): {rc.stderr.decode()[-500:]}")
        return 1
    a, b = final_weights(root / "whole"), final_weights(run)
    same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = [[r["loss"] for r in read_metrics(d) if r["type"] == "train"] for d in (root / "whole", run)]
    print(f"{kills} kills; resumed from {', '.join(resumes)}")
    print(f"final weights bit-identical: {same_weights}; logged losses identical: {loss[0] == loss[1]} "
          f"({len(loss[1])} steps); total {time.perf_counter() - t0:.0f} s; files in {root}")
    return 0 if same_weights and loss[0] == loss[1] else 1


if __name__ == "__main__":
    sys.exit(main())
