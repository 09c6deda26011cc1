"""`miniglm train`: pretrain or fine-tune (SFT) a model into a run directory; resumable; torchrun-ready.

examples:
  miniglm train --config small --data data/prepared --out runs/small
  miniglm train --out runs/small --resume                  # continue after Ctrl-C or a crash
  miniglm train --config sft --data data/sft --init-from runs/small --out runs/sft

distributed (DistributedDataParallel; NCCL on GPUs, gloo on CPUs; batch_size is per process, so
the tokens per step are batch_size x block_size x grad_accum_steps x processes):
  one machine, 4 GPUs:
    torchrun --standalone --nproc_per_node 4 -m miniglm train --config base --data D --out runs/base
  two machines with 8 GPUs each (run on both; node_rank 0 and 1; MASTER reachable from both):
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr MASTER --master_port 29500
      -m miniglm train --config base --data D --out runs/base   (one command line)
  The data and run directory must be visible at the same path on every node (only rank 0
  writes logs and checkpoints); --resume works the same way.

For a time budget, `--config auto --max_minutes N` lets the budget recipe (miniglm/train/recipe.py)
choose the model's shape, batch and learning rate from the training speed it measures here:
  miniglm train --config auto --max_minutes 10 --data data/prepared --out runs/auto

Every field of the training config is also a flag (`--max_steps 200`, `--model.hidden_size 256`,
`--key=value`). With `--resume` the run's own config.json is the starting point (flags still
override it, e.g. a larger `--max_steps`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from miniglm.cli.common import Parser
from miniglm.config import (
    TrainConfig,
    add_config_arguments,
    load_config,
    merge,
    overrides_from_args,
    parse_overrides,
)
from miniglm.errors import UserError
from miniglm.io import check_confined


def build_parser() -> Parser:
    p = Parser(prog="miniglm train", description=__doc__.split("\n\nEvery field")[0],
               epilog="Exit codes: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM after saving a checkpoint.")
    p.add_argument("--config", metavar="FILE|PRESET",
                   help="TOML config file or bundled preset (tiny, small, base, sft), or auto (the budget "
                        "recipe; needs --max_minutes); default: the run's config.json with --resume, else the "
                        "built-in defaults")
    p.add_argument("--data", metavar="DIR", help="prepared data directory (overrides the config's `data`)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (overrides the config's `out`)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from this run's (best) weights, e.g. SFT from a pretrained run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (its config, metrics and checkpoints are deleted)")
    add_config_arguments(p, TrainConfig, skip=("data", "out", "init_from"))
    return p


def resolve_config(args) -> TrainConfig:
    """Preset/TOML (or, when resuming, the run's config.json) <- flags."""
    overrides = overrides_from_args(args)
    for key in ("data", "out", "init_from"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.resume and not args.config:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        return load_config(TrainConfig, overrides=merge(read_saved_config(Path(args.out)),
                                                              parse_overrides(TrainConfig, overrides)))
    if args.config == "auto":
        return recipe_config(args, overrides)
    return load_config(TrainConfig, args.config, overrides)


def recipe_config(args, overrides: list[str]) -> TrainConfig:
    """`--config auto`: the recipe's rung for --max_minutes on this machine, the data's vocabulary, then the flags."""
    from miniglm.data import store
    from miniglm.train import recipe

    flags = load_config(TrainConfig, recipe.BASE_PRESET, overrides)  # checks the flags first
    if args.resume:
        raise UserError("--config auto --resume: a resumed run keeps its own model; leave out --config")
    if flags.max_minutes <= 0:
        raise UserError("--config auto chooses the model for a time budget: give --max_minutes N")
    if not flags.data:
        raise UserError("--config auto needs --data DIR (the prepared data fixes the vocabulary)")
    if flags.mode != "pretrain" or flags.init_from:
        raise UserError("--config auto is for pretraining a new model (an SFT run takes its model from --init-from)")
    vocab = store.read_meta(flags.data, "pretrain")["vocab_size"]
    seconds = flags.max_minutes * 60
    rung, trials = recipe.choose(
        seconds, lambda r: recipe.measure_tokens_per_second(r, flags.device, vocab), vocab)
    print(recipe.report(seconds, rung, trials, vocab), flush=True)
    return load_config(TrainConfig, recipe.BASE_PRESET, rung.overrides(vocab) + overrides)


def read_saved_config(run_dir: Path) -> dict:
    check_confined(run_dir)  # a config.json linked from elsewhere is not this run's
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; nothing to resume (or pass --config)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    from miniglm.train.trainer import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result["signal"]:
        return 128 + result["signal"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
