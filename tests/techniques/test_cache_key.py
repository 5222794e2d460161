"""A cached step is reused only when it would be built the same: same library versions, checked if asked."""

from slimformer.artifacts import open_artifact
from slimformer.techniques import BuildContext, base, build, parse_recipe, recipe_key


def test_a_step_built_by_other_library_versions_is_rebuilt(tiny_bert, monkeypatch):
    recipe = parse_recipe("onnx")
    first = build(tiny_bert, recipe, context=BuildContext())
    assert build(tiny_bert, recipe, context=BuildContext()).path == first.path  # same versions: reused
    installed = base.library_version
    monkeypatch.setattr(base, "library_version", lambda name: "0.0.1" if name == "onnx" else installed(name))
    again = build(tiny_bert, recipe, context=BuildContext())
    assert again.path != first.path and (again.path / "model.onnx").is_file()
    source_key = open_artifact(tiny_bert).key
    assert recipe_key(source_key, recipe, BuildContext()) == again.key  # resume compares the same key
    monkeypatch.setattr(base, "library_version", installed)
    assert recipe_key(source_key, recipe, BuildContext()) == first.key


def test_an_unchecked_build_is_not_reused_as_a_checked_one(tiny_bert, context):
    recipe = parse_recipe("onnx")
    unchecked = build(tiny_bert, recipe, context=BuildContext())
    assert "check" not in unchecked.manifest["steps"][-1]
    checked = build(tiny_bert, recipe, context=context)
    assert checked.path != unchecked.path and checked.manifest["steps"][-1]["check"]["n"] == len(context.check_texts)
    assert recipe_key(open_artifact(tiny_bert).key, recipe, context) == checked.key
