"""Dotted KEY=VALUE overrides of any spec field, and a shipped spec shrunk to a smaller task list."""

from __future__ import annotations

import pytest

from pipeline.errors import MvlptError
from study.cli import main
from study.launch import resolve_spec_path
from study.overrides import command_line_spec

TASKS = {"tasks": ["shapes", "colors", "textures"]}


def _spec(pairs, flags=None, name="default"):
    path = resolve_spec_path(name)
    return command_line_spec(path, True, flags or {}, pairs)


def test_nested_and_method_fields():
    spec, notes = _spec(["noise.pairs=2", "multisource.k=2", "recipe.lr=0.1", "methods.coop.n_ctx=8"])
    assert spec.noise.pairs == 2 and spec.multisource.k == 2 and notes == []
    assert dict(spec.recipe)["lr"] == 0.1 and dict(dict(spec.methods)["coop"])["n_ctx"] == 8
    spec, _ = _spec(["resources.gpu=0", "methods.vpt.gated=false", "name=other"])
    assert spec.resources.gpu == 0.0 and dict(dict(spec.methods)["vpt"])["gated"] is False
    assert spec.name == "other"
    spec, _ = _spec(["recipe.upt.lr=0.01", "recipe.upt.selection=val_loss"])  # a method's own recipe
    assert (spec.recipe_for("upt").lr, spec.recipe_for("upt").selection) == (0.01, "val_loss")
    assert spec.recipe_for("coop").lr != 0.01


def test_list_fields():
    spec, _ = _spec(["seeds=0,3", "noise.seeds=[1, 2]", "multisource.policies=all,random_k", "shots=4"])
    assert spec.seeds == (0, 3) and spec.noise.seeds == (1, 2) and spec.shots == (4,)
    assert spec.multisource.policies == ("all", "random_k")
    spec, _ = _spec(["tasks=shapes,colors", "stages=zeroshot,single"])
    assert spec.tasks == ("shapes", "colors") and spec.stages == ("zeroshot", "single")


@pytest.mark.parametrize(
    "pair, message",
    [
        (
            "recipe.lrr=1",
            "override 'recipe.lrr': unknown key in 'recipe' (known: batch_size, epochs, grad_clip, lr",
        ),
        ("nois.pairs=1", "override 'nois.pairs': unknown key (known: backbone,"),
        ("methods.coop.depth=2", "override 'methods.coop.depth': unknown key in 'methods.coop' (known:"),
        ("noise=3", "'noise' is a table; name one of its keys (seeds, pairs, draw, targets)"),
        ("seeds.x=3", "'seeds' has no keys below it"),
        ("pairs", "expected KEY=VALUE"),
    ],
)
def test_a_wrong_key_is_named_with_what_it_could_be(pair, message):
    with pytest.raises(MvlptError, match="^") as err:
        _spec([pair])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "pair, message",
    [
        ("noise.pairs=x", "override 'noise.pairs': expected an integer, got 'x'"),
        ("recipe.lr=fast", "override 'recipe.lr': expected a number, got 'fast'"),
        ("seeds=0,a", "override 'seeds': expected a list of integers (a,b,c or [a, b, c]), got '0,a'"),
        ("methods.vpt.deep=maybe", "override 'methods.vpt.deep': expected true or false, got 'maybe'"),
        ("multisource.k=2.5", "override 'multisource.k': expected an integer, got '2.5'"),
    ],
)
def test_a_wrong_type_is_named_with_what_the_key_accepts(pair, message):
    with pytest.raises(MvlptError) as err:
        _spec([pair])
    assert message in str(err.value)


def test_values_the_loader_refuses_and_methods_left_out_are_named():
    with pytest.raises(MvlptError, match="'multisource.policies' has unknown value 'best'"):
        _spec(["multisource.policies=best"])
    with pytest.raises(MvlptError, match="method 'vpt' is not in this run's methods \\(coop\\)"):
        _spec(["methods.vpt.n_tokens=2"], {"methods": ["coop"]})


def test_a_shipped_spec_shrinks_to_fewer_tasks_but_a_given_size_stays_an_error():
    spec, notes = _spec([], TASKS)
    assert (spec.noise.targets, spec.multisource.k, spec.groups.n_groups, spec.multisource.folds) == (
        3,
        2,
        3,
        3,
    )
    assert notes == [
        "multisource.k 3 -> 2",
        "groups.n_groups 5 -> 3",
        "noise.targets 20 -> 3",
        "multisource.folds 4 -> 3",
    ]
    spec, notes = _spec(["noise.targets=2"], TASKS)
    assert spec.noise.targets == 2 and "noise.targets 20 -> 3" not in notes
    with pytest.raises(MvlptError, match="'noise.targets' must be between 0 and 3, got 5"):
        _spec(["noise.targets=5"], TASKS)


def test_a_users_spec_is_not_shrunk(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text(resolve_spec_path("default").read_text().replace('name = "default"', 'name = "mine"'))
    with pytest.raises(MvlptError, match="'noise.targets' must be between 0 and 3, got 20"):
        command_line_spec(path, False, TASKS, [])
    out = str(tmp_path / "results")
    # KEY=VALUE after the flags, as after the spec
    assert main(["run", "default", "--tasks", "shapes,colors", "--dry-run", "recipe.lr=fast"]) == 2
    assert "override 'recipe.lr': expected a number, got 'fast'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["run", "--dry-run", "--bogus"])
    assert usage.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["run", str(path), "--tasks", "shapes,colors", "--out", out, "--dry-run"]) == 2
    assert "'noise.targets' must be between 0 and 2, got 20" in capsys.readouterr().err
