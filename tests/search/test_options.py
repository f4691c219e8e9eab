"""One option table builds `alphac optimize`'s flags, alphac.optimize's keywords and defaults."""

from __future__ import annotations

import inspect

import pytest
import typer

import alphac
from alphac.cli import app
from alphac.search.driver import WHERE_IT_RUNS, SearchSettings
from alphac.search.options import OPTIONS, PARTS, defaults


def _cli_params() -> dict[str, object]:
    command = typer.main.get_command(app).commands["optimize"]
    return {p.name: p for p in command.params}


def test_the_cli_flags_and_the_api_keywords_are_the_table() -> None:
    cli = _cli_params()
    assert set(cli) == {*OPTIONS, "model", "json_output"}
    for name, option in OPTIONS.items():
        assert option.flag in cli[name].opts, name
        assert cli[name].default == option.default, name
    api = inspect.signature(alphac.optimize).parameters
    assert set(api) == {*OPTIONS, "model", "on_event"}
    assert {n: p.default for n, p in api.items() if n in OPTIONS} == defaults()


def test_every_option_has_a_part_and_settings_take_their_defaults_from_the_table() -> None:
    assert {o.part for o in OPTIONS.values()} <= set(PARTS)
    assert set(WHERE_IT_RUNS) == {"executor", "workers", "ray_address", "data_dir", "device"}
    settings = SearchSettings()
    for name in ("target", "objective", "max_accuracy_drop", "mutator", "strategy", "seed",
                 "executor", "device", "rungs", "eta", "final_init"):
        assert getattr(settings, name) == OPTIONS[name].default, name


def test_an_unknown_keyword_names_the_known_ones() -> None:
    with pytest.raises(TypeError, match="unknown options stepz; the options are target"):
        alphac.optimize("zoo:small_cnn", stepz=3)
