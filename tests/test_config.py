"""Config: TOML presets, --key=value overrides, and one-line errors naming the key."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from miniglm.__main__ import main
from miniglm.cli.common import Parser
from miniglm.config import (
    PRESET_DIR,
    ConfigError,
    ModelConfig,
    PrepareConfig,
    SampleConfig,
    SFTDataConfig,
    TrainConfig,
    add_config_arguments,
    load_config,
    overrides_from_args,
    save_config,
)


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_every_preset_loads(preset):
    # sft fine-tunes at the learning rate of the run it starts from (learning_rate = 0), so it needs one
    cfg = load_config(TrainConfig, preset, ["init_from=runs/pre"] if preset == "sft" else [])
    assert cfg.block_size <= cfg.model.max_position_embeddings


def test_the_sft_preset_without_a_run_to_start_from_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"learning_rate: must be > 0 \(or 0 with init_from"):
        load_config(TrainConfig, "sft")
    assert load_config(TrainConfig, "sft", ["learning_rate=1e-4"]).learning_rate == 1e-4


def test_tiny_preset_values_and_nested_model_table():
    cfg = load_config(TrainConfig, "tiny")
    assert (cfg.model.hidden_size, cfg.model.num_hidden_layers, cfg.batch_size, cfg.progress) == (32, 2, 4, False)
    assert cfg.model.num_key_value_heads == cfg.model.num_attention_heads  # 0 means "same as heads"
    assert cfg.learning_rate == 3e-3 and isinstance(cfg.learning_rate, float)


def test_overrides_beat_the_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("batch_size = 3\n[model]\nhidden_size = 64\nnum_attention_heads = 4\n", encoding="utf-8")
    cfg = load_config(TrainConfig, p, ["batch_size=5", "model.num_hidden_layers=3", "--compile=yes"])
    assert (cfg.batch_size, cfg.model.hidden_size, cfg.model.num_hidden_layers, cfg.compile) == (5, 64, 3, True)


@pytest.mark.parametrize("toml, msg", [
    ("bogus = 1", "unknown config key 'bogus' (known: "),
    ("[model]\nbogus = 1", "unknown config key 'model.bogus'"),
    ("batch_size = 'x'", "batch_size: expected an integer, got 'x'"),
    ("batch_size = 1.5", "batch_size: expected an integer, got 1.5"),
    ("batch_size = true", "batch_size: expected an integer, got True"),
    ("compile = 3", "compile: expected true/false, got 3"),
    ("learning_rate = 'fast'", "learning_rate: expected a number, got 'fast'"),
    ("device = 'tpu'", "device: must be one of auto, cpu, cuda, mps; got 'tpu'"),
    ("model = 3", "model: expected a table of ModelConfig fields, got 3"),
    ("batch_size = 0", "batch_size: must be > 0, got 0"),
    ("min_lr = 1.0", "min_lr: must be in [0, learning_rate]"),
    ("[model]\nhidden_size = 30", "model.hidden_size: 30 is not divisible by num_attention_heads=8"),
    ("block_size = 1024", "block_size: 1024 exceeds model.max_position_embeddings=512"),
    ("batch_size = ", "invalid TOML"),
])
def test_bad_toml_names_the_key(tmp_path, toml, msg):
    p = tmp_path / "bad.toml"
    p.write_text(toml + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, p)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file_lists_presets():
    with pytest.raises(ConfigError, match=r"config file not found: nosuch \(bundled presets: .*tiny"):
        load_config(TrainConfig, "nosuch")


@pytest.mark.parametrize("cls, overrides, msg", [
    (PrepareConfig, ["vocab_size=100"], "vocab_size: must be >= 258, got 100"),
    (PrepareConfig, ["val_fraction=0"], "val_fraction: must be in (0, 1), got 0.0"),
    (PrepareConfig, ["split_on=book"], "split_on: must be one of document, chapter, paragraph"),
    (SFTDataConfig, ["block_size=4"], "block_size: must be >= 8, got 4"),
    (SampleConfig, ["top_p=0"], "top_p: must be in (0, 1], got 0.0"),
    (SampleConfig, ["temperature=-1"], "temperature: must be >= 0, got -1.0"),
    (TrainConfig, ["model.num_key_value_heads=3"], "model.num_key_value_heads: 3 does not divide"),
    (TrainConfig, ["batch_size"], "override 'batch_size' is not key=value"),
])
def test_impossible_values_name_the_key(cls, overrides, msg):
    with pytest.raises(ConfigError) as e:
        load_config(cls, overrides=overrides)
    assert msg in str(e.value)


def _parse(cls, argv):
    parser = Parser(prog="t")
    add_config_arguments(parser, cls)
    return load_config(cls, overrides=overrides_from_args(parser.parse_args(argv)))


def test_cli_flags_both_spellings_and_bools():
    cfg = _parse(TrainConfig, ["--batch-size=8", "--grad_accum_steps", "2", "--learning-rate", "1e-3",
                               "--compile", "--progress=false", "--model.hidden_size=64", "--model.num_attention_heads", "4"])
    assert (cfg.batch_size, cfg.grad_accum_steps, cfg.learning_rate) == (8, 2, 1e-3)
    assert cfg.compile is True and cfg.progress is False
    assert (cfg.model.hidden_size, cfg.model.num_attention_heads) == (64, 4)
    assert _parse(TrainConfig, []) == TrainConfig()  # unset flags do not override


def test_cli_flag_with_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="max_steps: expected an integer, got 'ten'"):
        _parse(TrainConfig, ["--max-steps=ten"])


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(TrainConfig, "small", ["seed=9"])
    save_config(cfg, tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert load_config(TrainConfig, overrides=data) == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_every_field_has_help():
    for cls in (TrainConfig, ModelConfig, PrepareConfig, SFTDataConfig, SampleConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


@pytest.mark.parametrize("cmd", ["train", "prepare"])
def test_unknown_flag_is_one_line_exit_2(cmd, tmp_path, capsys):
    if importlib.util.find_spec(f"miniglm.cli.{cmd}") is None:
        pytest.skip(f"miniglm/cli/{cmd}.py not written yet")
    argv = [cmd, "--bogus=1"] + ([str(tmp_path), "--out", str(tmp_path / "o")] if cmd == "prepare" else [])
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"miniglm {cmd}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    if cmd == "prepare":
        assert "unrecognized arguments: --bogus=1" in err
