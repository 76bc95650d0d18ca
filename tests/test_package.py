"""Package boundaries and the command line."""

import subprocess
import sys

import pytest

from reconfusion.cli import main


def test_import_reconfusion_loads_no_nerfstudio():
    code = (
        "import sys, importlib, pkgutil, reconfusion\n"
        "for m in pkgutil.iter_modules(reconfusion.__path__):\n    if m.name == '__main__': continue\n"
        "    importlib.import_module('reconfusion.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nerfstudio', 'nerfstudio_plugin', 'train_prior'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_data_tools_does_not_import_models():
    code = (
        "import sys, data_tools.splits, data_tools.importers, data_tools.synthetic\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nerfstudio', 'diffusers', 'train_prior'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "import", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out


def test_cli_lists_data_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for name in ("colmap", "import", "splits", "synthetic"):
        assert name in out


def test_cli_bad_input_exits_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "splits", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "missing" in capsys.readouterr().err
