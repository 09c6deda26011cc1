"""A missing optional package is one line naming the extra, exit code 2, before any work is done.

Packages are hidden by putting None into `sys.modules` for the package and every submodule
already imported, which is what Python does for a module that cannot be imported at all.
"""

import sys

import pytest

from miniglm.__main__ import main
from miniglm.extras import EXTRAS, MissingExtra, require


def hide(monkeypatch, package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")] or [package]:
        monkeypatch.setitem(sys.modules, name, None)


def hint(extra: str) -> str:
    return f'pip install "miniglm[{extra}]"'


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_require_names_the_extra(monkeypatch, extra):
    hide(monkeypatch, "json")  # any importable package will do: hidden, it is "not installed"
    with pytest.raises(MissingExtra) as err:
        require("json.decoder", extra)
    message = str(err.value)
    assert "\n" not in message and message.startswith("json is not installed")
    assert hint(extra) in message


def test_require_returns_the_module_when_present():
    assert require("json", "eval").__name__ == "json"


def test_a_broken_package_shows_its_own_error(monkeypatch, tmp_path):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import module_that_does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:  # not MissingExtra: installing the extra would not help
        require("brokenpkg", "eval")
    assert not isinstance(err.value, MissingExtra)


def test_library_metrics_and_plots_hint_at_the_eval_extra(monkeypatch):
    from miniglm.evaluate import metrics, plot

    hide(monkeypatch, "sacrebleu")
    with pytest.raises(MissingExtra, match=r'pip install "miniglm\[eval\]"'):
        metrics.bleu_chrf(["好"], [["好"]])
    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtra, match=r'pip install "miniglm\[eval\]"'):
        plot.new_figure()


@pytest.mark.parametrize("package, argv", [
    # The run directories do not exist: an error about them would mean work began before the check.
    ("sacrebleu", ["eval", "{tmp}/no_run", "--qa", "{tmp}/no_qa.jsonl", "--out", "{tmp}/report"]),
    ("matplotlib", ["plot", "{tmp}/no_run", "--out", "{tmp}/plots"]),
    ("matplotlib", ["demo", "--out", "{tmp}/demo", "--offline"]),
    ("sacrebleu", ["demo", "--out", "{tmp}/demo", "--offline"]),
])
def test_commands_check_their_extra_first(monkeypatch, capsys, tmp_path, package, argv):
    hide(monkeypatch, package)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"miniglm {argv[0]}: error: {package} is not installed") and hint("eval") in err
    assert list(tmp_path.iterdir()) == []  # nothing written: no report, plots or demo directory
