"""`miniglm <command> --help` exits 0 and describes every flag, for every command written so far."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from miniglm.__main__ import COMMANDS, main

# commands with sub-actions: their --help is checked for each action too
SUBCOMMANDS = {"tokenizer": ["train"], "arena": ["leaderboard"]}
CASES = [[name] for name in COMMANDS] + [[name, sub] for name, subs in SUBCOMMANDS.items() for sub in subs]


def _help(argv: list[str], monkeypatch, capsys) -> tuple[str, argparse.ArgumentParser]:
    """Run `miniglm ARGV --help`; return what it printed and the parser that printed it."""
    shown: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.print_help

    def spy(self, file=None):
        shown.append(self)
        original(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", spy)
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert len(shown) == 1
    return capsys.readouterr().out, shown[0]


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_help_describes_every_flag(argv, monkeypatch, capsys):
    module = COMMANDS[argv[0]][0]
    if importlib.util.find_spec(f"miniglm.cli.{module}") is None:
        pytest.skip(f"miniglm/cli/{module}.py not written yet")
    out, parser = _help(argv, monkeypatch, capsys)
    assert out.startswith(f"usage: miniglm {' '.join(argv)}")
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help and action.help.strip(), f"{action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in out, f"{flag} missing from the help of {' '.join(argv)}"


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("miniglm: error: unknown command 'nosuch'") and err.count("\n") == 1


@pytest.mark.parametrize("given", [None, "8"], ids=["unset", "user's own"])
def test_commands_stop_openblas_threads_spinning_unless_the_user_says(given, monkeypatch, capsys):
    """Before a command loads numpy, `miniglm` sets OPENBLAS_THREAD_TIMEOUT=22 (idle OpenBLAS threads
    would spin on the cores torch needs next); a value the user set stays."""
    import os

    if given is None:
        monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", given)
    _help(["sample"], monkeypatch, capsys)
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == (given or "22")
