"""--help of the neural CLIs: each default said once; grow explains every option with its default;
--jobs/--scheduler refused with one line when bad."""

import pytest

pytest.importorskip("torch")

from kdtheory.neural.experiments import compress, grow, selfdistil, table, train

TOOLS = {
    "train": train,
    "table": table,
    "compress": compress,
    "grow": grow,
    "selfdistil": selfdistil,
}


def _helps(module):
    p = module.build_parser()
    fmt = p._get_formatter()
    return {a.option_strings[-1]: fmt._expand_help(a) for a in p._actions if a.option_strings}


@pytest.mark.parametrize("name", TOOLS)
def test_each_default_is_said_once(name):
    for flag, text in _helps(TOOLS[name]).items():
        assert text.count("(default") <= 1 and text.count("default:") <= 1, (flag, text)


def test_grow_explains_every_option_with_its_default():
    for flag, text in _helps(grow).items():
        if flag != "--help":
            assert len(text) > 15 and "default" in text, (flag, text)


@pytest.mark.parametrize("name", ["compress", "table", "grow", "selfdistil"])
@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--jobs", "0", "--jobs must be an integer ≥ 1"),
    ("--scheduler", "localhost:8786", "--scheduler must look like tcp://host:port"),
])  # fmt: skip
def test_bad_workers_one_line_exit_2(name, flag, value, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        TOOLS[name].main([flag, value, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
