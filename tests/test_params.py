from pathlib import Path

import pytest

from omniforge.errors import ParamsError
from omniforge.params import Params, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_parses_and_matches_the_defaults() -> None:
    params = load_params(REPO / "params.yaml")
    assert params == Params()
    assert params.model.preset == "lite"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ParamsError, match=r"quantize\.int4\.blok_size: unknown key"):
        parse_params({"quantize": {"int4": {"blok_size": 64}}})


def test_unknown_section_is_named() -> None:
    with pytest.raises(ParamsError, match=r"benchmarks: unknown key"):
        parse_params({"benchmarks": {}})


def test_wrong_type_is_named() -> None:
    with pytest.raises(ParamsError, match=r"benchmark\.threads"):
        parse_params({"benchmark": {"threads": "many"}})


def test_bad_choice_is_named() -> None:
    with pytest.raises(ParamsError, match=r"quantize\.int4\.block_size"):
        parse_params({"quantize": {"int4": {"block_size": 48}}})


def test_validate_section_keeps_its_yaml_name() -> None:
    params = parse_params({"validate": {"seed": 7}})
    assert params.validate_.seed == 7
    assert params.as_dict()["validate"]["seed"] == 7


def test_validate_shapes_must_differ_in_every_dynamic_axis() -> None:
    shapes = {
        "talker": [{"batch": 2, "length": 8}, {"batch": 2, "length": 9}],
        "projection": [{"batch": 2, "length": 8}, {"batch": 3, "length": 9}],
    }
    with pytest.raises(ParamsError, match="validate.shapes.talker needs two shapes"):
        parse_params({"validate": {"shapes": shapes}})


def test_every_component_needs_benchmark_lengths() -> None:
    lengths = {"talker": [8], "projection": [8]}
    with pytest.raises(
        ParamsError, match="benchmark.lengths has no entry for component 'talker_kv'"
    ):
        parse_params({"benchmark": {"lengths": lengths}})


def test_entries_for_components_not_built_are_ignored_but_unknown_ones_fail() -> None:
    assert parse_params({"components": ["talker", "projection"]}).components == [
        "talker",
        "projection",
    ]
    lengths = {"talker": [8], "talker_kv": [8], "projection": [8], "encoder": [8]}
    with pytest.raises(ParamsError, match="benchmark.lengths.encoder: unknown component"):
        parse_params({"benchmark": {"lengths": lengths}})


def test_pretrained_needs_a_path_or_hub_id() -> None:
    with pytest.raises(ParamsError, match="model.path or model.hub_id"):
        parse_params({"model": {"source": "pretrained"}})


def test_export_example_sizes_must_stay_dynamic() -> None:
    with pytest.raises(ParamsError, match=r"export\.example_batch"):
        parse_params({"export": {"example_batch": 1}})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
