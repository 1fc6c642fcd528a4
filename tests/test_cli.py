"""`omniforge verify`, `show`, `compare` and `clean` on a published set made in the test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omniforge.artifacts import artifact_bytes, artifact_files
from omniforge.cli import app
from omniforge.params import Gate
from omniforge.publish import Candidate, publish

runner = CliRunner()


def candidate(variant: str, directory: Path, cosine: float, p50_ms: float) -> Candidate:
    return Candidate(
        component="projection",
        variant=variant,
        graphs={"model": directory},
        graph_kind="full-sequence",
        parity={"cosine": cosine, "max_abs_error": 0.01},
        benchmark={
            "latency": {"frames=100": {"p50_ms": p50_ms}},
            "largest_case": "frames=100",
            "largest_case_p50_ms": p50_ms,
            "load_s": 0.01,
            "size": artifact_bytes(directory),
        },
        files=artifact_files(directory),
    )


@pytest.fixture(scope="module")
def published(tiny_variants: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "published"
    variants = tiny_variants["projection"]
    publish(
        [
            candidate("fp32", variants["fp32"], 1.0, 2.0),
            candidate("int8", variants["int8"], 0.9999, 1.0),
            candidate("int4", variants["int4"], 0.5, 0.8),
        ],
        {"fp32": Gate(), "int8": Gate(), "int4": Gate(min_cosine=0.9)},
        out,
        {"projection": {"kind": "synthetic", "preset": "tiny", "seed": 0}},
        {},
    )
    return out


def test_verify_a_published_set_and_one_artifact(published: Path) -> None:
    result = runner.invoke(app, ["verify", str(published)])
    assert result.exit_code == 0 and "2 artifact(s) verified" in result.stdout
    single = runner.invoke(app, ["verify", str(published / "projection" / "int8")])
    assert single.exit_code == 0 and "projection/int8" in single.stdout


def test_verify_fails_on_a_changed_byte(published: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(published / "projection" / "fp32", tmp_path / "fp32")
    data = copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-1] + b"\0")
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and "model.onnx.data" in result.stdout


def test_show_prints_headlines_and_refusals(published: Path) -> None:
    result = runner.invoke(app, ["show", str(published)])
    assert result.exit_code == 0
    assert "projection/fp32" in result.stdout and "projection/int8" in result.stdout
    assert "min_cosine" in result.stdout, "the refused int4 and the gate that refused it"


def test_compare_two_variants_with_ratios(published: Path) -> None:
    result = runner.invoke(
        app, ["compare", "projection/fp32", "projection/int8", "--directory", str(published)]
    )
    assert result.exit_code == 0
    assert "2.00×" in result.stdout  # latency 2.0 ms vs 1.0 ms
    missing = runner.invoke(
        app, ["compare", "projection/fp32", "projection/int4", "--directory", str(published)]
    )
    assert missing.exit_code == 1 and "not published" in missing.stdout


def test_clean_removes_temporaries_of_dead_runs(tmp_path: Path) -> None:
    stale = tmp_path / "models" / ".fp32.tmp-999999999-x"
    stale.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(app, ["clean"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0 and not stale.exists()


# `show` fits the terminal and says where and when its figures were measured.

EPYC = "AMD EPYC 7763 64-Core Processor"
LONG = "int4-block128-asymmetric-exact"  # longer than any variant today


def timed(variant: str, directory: Path, measured_at: str | None) -> Candidate:
    """A candidate with a KV talker's many headline figures, measured on EPYC (or with no
    record of where and when when ``measured_at`` is None)."""
    made = candidate(variant, directory, 0.99, 3.0)
    made.benchmark |= {
        "decode_p50_ms": 8.3,
        "prefill_p50_ms": 320.0,
        "time_to_first_code_ms": 350.0,
        "decode_speedup_vs_torch": 4.0,
        "decode_speedup_vs_baseline": 1.7,
        "decode_speedup_vs_reference": 1.5,
        "decode_real_time_factor": 0.42,
    }
    made.parity |= {"top1_agreement": 0.776}
    if measured_at is not None:
        made.benchmark |= {"measured_at": measured_at, "measured_on": EPYC}
    return made


@pytest.fixture(scope="module")
def measured(tiny_variants: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-measured") / "published"
    variants = tiny_variants["projection"]
    publish(
        [
            timed("fp32", variants["fp32"], "2026-12-05T23:59:00+00:00"),
            timed(LONG, variants["int8"], "2026-12-06T13:17:54+00:00"),
        ],
        {"fp32": Gate(), LONG: Gate()},
        out,
        {"projection": {"kind": "synthetic", "preset": "tiny", "seed": 0}},
        {},
    )
    return out


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 120, 200])
def test_show_tables_fit_the_width_and_cut_no_name(width: int) -> None:
    import io

    from rich.console import Console

    from omniforge.cli import figure_tables
    from omniforge.publish.headline import HEADLINE_KEYS

    names = ["talker_fused/int4-block128", "token2wav/int4-block128", f"talker_kv/{LONG}"]
    figures = {key: 0.98682 for key in HEADLINE_KEYS} | {"first_audio_ms": 6600.0}
    rows = [(name, figures) for name in names]
    screen = Console(width=width, file=io.StringIO(), color_system=None)
    tables = figure_tables(screen, "published in models/published", rows, list(HEADLINE_KEYS))
    for table in tables:
        screen.print(table)
    out = screen.file.getvalue()
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width, out
    assert width > 120 or len(tables) > 1, "the figures do not fit 120 columns beside the name"
    for name in names:  # whole on one line, once per table
        assert sum(name in line for line in lines) == len(tables), (name, out)
    assert "…" not in out and out.count("6600.0") == len(names), "a figure was cut"


def test_show_fits_80_columns_without_cutting_a_name(measured: Path) -> None:
    result = runner.invoke(app, ["show", str(measured)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert any(f"projection/{LONG}" in line for line in lines), result.stdout
    assert "…" not in result.stdout and "0.776" in result.stdout


def test_show_says_where_and_when_figures_were_measured(
    measured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omniforge.benchmark import reuse

    monkeypatch.setattr(reuse, "machine", lambda: {"cpu": EPYC})
    here = runner.invoke(app, ["show", str(measured)])
    assert here.exit_code == 0, here.stdout
    said = words(here.stdout)
    assert f"figures measured on {EPYC}, between 2026-12-05 and 2026-12-06" in said, said
    assert "not this machine" not in said

    monkeypatch.setattr(reuse, "machine", lambda: {"cpu": "Intel(R) Xeon(R) Platinum 8480+"})
    elsewhere = runner.invoke(app, ["show", str(measured)])
    said = words(elsewhere.stdout)
    assert elsewhere.exit_code == 0 and f"figures measured on {EPYC}" in said, said
    assert f"not this machine: measured on {EPYC}, this machine is Intel(R) Xeon(R)" in said

    as_json = runner.invoke(app, ["show", str(measured), "--json"])
    shown = json.loads(as_json.stdout)
    assert shown["projection/fp32"]["measured_on"] == EPYC
    assert shown["projection/fp32"]["measured_at"] == "2026-12-05"
    assert shown["projection/fp32"]["cosine"] == 0.99, "the headline is still there"


def test_show_says_when_where_and_when_are_not_on_record(published: Path) -> None:
    result = runner.invoke(app, ["show", str(published)])
    assert result.exit_code == 0
    said = words(result.stdout)
    assert "where and when these figures were measured is not on record" in said, said


def test_measured_lines_name_what_is_not_on_record() -> None:
    from omniforge.cli import measured_lines

    lines = measured_lines(
        {
            "talker_kv/int8": {"measured_at": "2026-12-06", "measured_on": EPYC},
            "token2wav/fp32": {},
            "token2wav/int8": {},
        },
        EPYC,
    )
    said = words(" | ".join(lines))
    assert f"figures measured on {EPYC}, 2026-12-06" in said
    assert "not on record: on which CPU token2wav/* were measured" in said
    assert "not on record: when token2wav/* were measured" in said
    assert "maybe not this machine" in said and "not this machine:" not in said
