"""Custody into the process: one verifying way in, the bytes run are the bytes hashed, and
bad inputs, settings and manifests named (issue 22's classes, on the tiny preset)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import thinker_states
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniforge.artifacts import (
    DATA_FILENAME,
    artifact_bytes,
    artifact_files,
    graph_files,
    read_json,
    write_json,
)
from omniforge.errors import ArtifactError, CustodyError, OmniforgeError
from omniforge.params import Gate
from omniforge.publish import Candidate, publish
from omniforge.runtime import (
    GenerationConfig,
    OnnxTalker,
    generate_codes,
    load_manifest,
    load_session,
    load_talker,
    verify_all,
    verify_artifact,
)
from omniforge.runtime.manifest import MANIFEST_FILENAME
from omniforge.runtime.talker import open_unverified_talker

FEATURES = np.random.default_rng(3).standard_normal((1, 6, 32)).astype(np.float32)


def candidate(component: str, variant: str, graphs: dict[str, Path], kind: str) -> Candidate:
    first = next(iter(graphs.values()))
    return Candidate(
        component=component,
        variant=variant,
        graphs=graphs,
        graph_kind=kind,
        parity={"cosine": 1.0, "max_abs_error": 0.0},
        benchmark={"load_s": 0.01, "size": artifact_bytes(first), "decode_p50_ms": 1.0},
        files=graph_files(graphs),
    )


@pytest.fixture(scope="module")
def published(tiny_variants: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published set: the tiny projection (fp32, int8), a fused talker and a hybrid pair."""
    out = tmp_path_factory.mktemp("custody") / "published"
    projection, fused = tiny_variants["projection"], tiny_variants["talker_fused"]
    publish(
        [
            candidate("projection", "fp32", {"model": projection["fp32"]}, "full-sequence"),
            candidate("projection", "int8", {"model": projection["int8"]}, "full-sequence"),
            candidate("talker_fused", "fp32", {"model": fused["fp32"]}, "kv-cache"),
            candidate(
                "talker_fused",
                "hybrid",
                {"prefill": fused["int8"], "decode": fused["int4"]},
                "kv-cache",
            ),
        ],
        dict.fromkeys(("fp32", "int8", "hybrid"), Gate()),
        out,
        {},
        {},
    )
    return out


@pytest.fixture
def copy(published: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(published, tmp_path / "published"))


def _run_projection(session: object) -> np.ndarray:
    return session.run(None, {"audio_features": FEATURES})[0]  # type: ignore[attr-defined]


# --- 1. one way in --------------------------------------------------------------------------


def test_generate_codes_takes_only_a_loaded_talker(published: Path) -> None:
    prompt, reply = thinker_states(batch=1, prompt=4, reply=2)
    with pytest.raises(TypeError, match="load_talker"):
        generate_codes(published / "talker_fused" / "fp32", prompt, reply)  # type: ignore[arg-type]
    assert not hasattr(OnnxTalker, "load"), "no path-taking loader that skips the hashes"


def test_every_loader_refuses_zeroed_data(copy: Path) -> None:
    data = copy / "talker_fused" / "fp32" / DATA_FILENAME
    data.write_bytes(bytes(data.stat().st_size))
    for load in (
        lambda: load_talker(copy, "talker_fused", "fp32"),
        lambda: load_talker(copy / "talker_fused" / "fp32"),
        lambda: load_session(copy / "talker_fused" / "fp32"),
    ):
        with pytest.raises(CustodyError, match=f"{DATA_FILENAME}: sha256"):
            load()


def test_a_hybrid_pair_loads_from_its_hashed_bytes(published: Path) -> None:
    talker = load_talker(published, "talker_fused", "hybrid", threads=1)
    assert talker.prefill_session is not None
    prompt, reply = thinker_states(batch=1, prompt=5, reply=2)
    codes = talker.generate(prompt, reply, GenerationConfig(max_new_tokens=4)).codes
    assert codes.shape == (1, 4)


# --- 2. the bytes run are the bytes hashed ----------------------------------------------------


def test_a_data_file_swapped_during_loads_never_runs(copy: Path) -> None:
    """The data file is replaced atomically, again and again, by a zeroed one and back, while
    the set is loaded 120 times: every load runs the verified bytes or refuses."""
    folder = copy / "projection" / "fp32"
    data = folder / DATA_FILENAME
    good = data.read_bytes()
    expected = _run_projection(load_session(copy, "projection", "fp32"))
    zeroed = bytes(len(good))
    stop = threading.Event()

    def swap() -> None:
        scratch = folder.parent / ".swap"
        turn = 0
        while not stop.is_set():
            scratch.write_bytes(zeroed if turn % 2 == 0 else good)
            os.replace(scratch, data)
            turn += 1

    swapper = threading.Thread(target=swap)
    swapper.start()
    loaded = refused = wrong = 0
    try:
        for _ in range(120):
            try:
                session = load_session(copy, "projection", "fp32")
            except CustodyError:
                refused += 1
                continue
            loaded += 1
            if not np.array_equal(_run_projection(session), expected):
                wrong += 1
    finally:
        stop.set()
        swapper.join()
    assert wrong == 0, f"{wrong} of {loaded} loads ran bytes other than the verified ones"
    assert loaded + refused == 120 and loaded > 0 and refused > 0, (loaded, refused)


@pytest.mark.parametrize(
    ("location", "message"),
    [("../elsewhere.data", "leaves the graph's folder"), ("model.onnx", "names itself")],
)
def test_a_graph_naming_data_outside_its_folder_or_itself_is_refused(
    copy: Path, location: str, message: str
) -> None:
    import onnx

    folder = copy / "projection" / "fp32"
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for item in tensor.external_data:
            if item.key == "location":
                item.value = location
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    _relist(copy, "projection/fp32")
    with pytest.raises(CustodyError, match=message):
        load_session(copy, "projection", "fp32")


def _relist(copy: Path, path: str) -> None:
    """Record an artifact's files as they now are, in the set's manifest and in its own."""
    records = [r.__dict__ for r in artifact_files(copy / path, exclude=(MANIFEST_FILENAME,))]
    for manifest_path in (copy / MANIFEST_FILENAME, copy / path / MANIFEST_FILENAME):
        manifest = read_json(manifest_path)
        entries = manifest.get("artifacts") or [manifest["artifact"]]
        next(a for a in entries if a["path"] == path)["files"] = records
        write_json(manifest_path, manifest)


# --- 3. non-finite inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["prompt_embeds", "reply_embeds"])
def test_non_finite_embeddings_are_refused_with_their_position(
    tiny_variants: dict, bad: float, where: str
) -> None:
    fused = tiny_variants["talker_fused"]
    prompt, reply = thinker_states(batch=2, prompt=5, reply=3)
    (prompt if where == "prompt_embeds" else reply)[1, 2, 7] = bad
    for talker in (
        open_unverified_talker(fused["fp32"], threads=1),
        open_unverified_talker(fused["int4"], threads=1, prefill=fused["int8"]),
    ):
        with pytest.raises(ValueError, match=rf"{where} holds a non-finite value .* \[1, 2, 7\]"):
            talker.generate(prompt, reply, GenerationConfig(max_new_tokens=3))


def test_a_non_finite_past_is_refused(tiny_variants: dict) -> None:
    talker = open_unverified_talker(tiny_variants["talker_kv"]["fp32"], threads=1)
    prompt, reply = thinker_states(batch=1, prompt=3, reply=2)
    layer = np.zeros((1, talker.layout.kv_heads, 4, talker.layout.head_dim), np.float32)
    past = [(layer, layer)] * talker.num_layers
    bad = layer.copy()
    bad[0, 1, 2, 3] = np.nan
    past[1] = (layer, bad)
    with pytest.raises(
        ValueError, match=r"past layer 1 holds a non-finite value .* \[0, 1, 2, 3\]"
    ):
        talker.generate(prompt, reply, past=past)


# --- 4. settings that cannot be right ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"code_limit": 0}, "code_limit must be >= 1"),
        ({"code_limit": -1}, "code_limit must be >= 1"),
        ({"temperature": float("nan")}, "temperature must be finite"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty must be finite"),
        ({"top_p": float("nan")}, "top_p must be finite"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer, got float 2.5"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"top_k": True}, "top_k must be an integer"),
        ({"stop_ids": ("eos",)}, r"stop_ids\[0\] must be an integer"),
        ({"do_sample": "yes"}, "do_sample must be True or False"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"min_new_tokens": 5, "max_new_tokens": 2}, "min_new_tokens must lie in"),
    ],
)
def test_a_setting_that_cannot_be_right_is_named(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"GenerationConfig.{message}"):
        GenerationConfig(**setting)


def test_ids_outside_the_vocabulary_are_named(tiny_variants: dict) -> None:
    talker = open_unverified_talker(tiny_variants["talker_fused"]["fp32"], threads=1)
    prompt, reply = thinker_states(batch=1, prompt=3, reply=2)
    for setting in ({"pad_id": 9000}, {"stop_ids": (9000,)}, {"code_limit": 9000}):
        with pytest.raises(ValueError, match="outside the talker's vocabulary of 8448"):
            talker.generate(prompt, reply, GenerationConfig(max_new_tokens=2, **setting))


# --- 5. malformed manifests, 6. containment ---------------------------------------------------


def _edit(copy: Path, change: object) -> None:
    manifest = read_json(copy / MANIFEST_FILENAME)
    change(manifest)  # type: ignore[operator]
    write_json(copy / MANIFEST_FILENAME, manifest)


def _first_file(manifest: dict) -> dict:
    return manifest["artifacts"][0]["files"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: _first_file(m).update(bytes=1e400), r"files\.0\.bytes: Input should be a valid"),
        (lambda m: _first_file(m).update(bytes=-1), r"files\.0\.bytes: Input should be greater"),
        (lambda m: _first_file(m).update(sha256="xyz"), r"files\.0\.sha256: String should match"),
        (
            lambda m: m["artifacts"][0].update(path=5),
            r"artifacts\.0\.path: Input should be a valid",
        ),
        (lambda m: m["artifacts"][0].update(path="../x"), "not a relative path inside the set"),
        (lambda m: m["artifacts"][0].update(path="/tmp/x"), "not a relative path inside the set"),
        (lambda m: _first_file(m).update(name="../../etc/passwd"), "not a relative path inside"),
        (lambda m: m.pop("rejected"), "rejected: missing"),
        (lambda m: m["artifacts"][0].pop("metrics"), r"artifacts\.0\.metrics: missing"),
        (lambda m: m["artifacts"][0]["metrics"].pop("parity"), r"metrics\.parity: missing"),
        (lambda m: m["artifacts"][0].update(extra=1), r"artifacts\.0\.extra: unknown key"),
        (lambda m: m["artifacts"].append(m["artifacts"][0]), "artifacts repeat"),
        (None, "nested too deeply"),
    ],
)
def test_a_malformed_manifest_is_named_by_every_reader(
    copy: Path, change: object, message: str
) -> None:
    from typer.testing import CliRunner

    from omniforge.cli import app

    if change is None:
        text = (copy / MANIFEST_FILENAME).read_text()
        (copy / MANIFEST_FILENAME).write_text(text[:-2] + ', "deep": ' + _nested(100_000) + "}")
    else:
        _edit(copy, change)
    for read in (
        lambda: load_manifest(copy),
        lambda: verify_all(copy),
        lambda: load_session(copy, "projection", "fp32"),
    ):
        with pytest.raises(ArtifactError, match=message):
            read()
    runner = CliRunner()
    for args in (
        ["verify", str(copy)],
        ["show", str(copy)],
        ["compare", "projection/fp32", "projection/int8", "--directory", str(copy)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and result.exception.__class__ is SystemExit, args
        assert "error:" in result.stdout and str(copy) in result.stdout, result.stdout


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_stray_file_or_folder_in_the_set_is_named(copy: Path) -> None:
    (copy / "notes.txt").write_text("unverified")
    with pytest.raises(CustodyError, match="notes.txt: a file the manifest does not list"):
        verify_all(copy)
    (copy / "notes.txt").unlink()
    (copy / "talker_fused" / "int4").mkdir()
    with pytest.raises(CustodyError, match="int4: a folder the manifest does not list"):
        verify_all(copy)


def test_an_artifact_linked_out_of_the_set_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = Path(shutil.copytree(copy / "projection" / "fp32", tmp_path / "outside"))
    shutil.rmtree(copy / "projection" / "fp32")
    (copy / "projection" / "fp32").symlink_to(outside)
    with pytest.raises(CustodyError, match="points outside"):
        load_session(copy, "projection", "fp32")
    with pytest.raises(CustodyError, match="points outside"):
        verify_all(copy)


def test_one_artifact_folder_verifies_and_names_its_own_manifest(published: Path) -> None:
    assert verify_artifact(published / "talker_fused" / "hybrid") == "talker_fused/hybrid"
    with pytest.raises(ArtifactError, match="not one artifact's manifest"):
        verify_artifact(published)
    with pytest.raises(ArtifactError, match="one artifact's manifest, not a published set's"):
        load_manifest(published / "projection" / "fp32")


def _mutations() -> st.SearchStrategy:
    """A path into the manifest and what to put there (or None: delete it)."""
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.just("../escape"),
        st.just([]),
        st.just({}),
    )
    return st.tuples(
        st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=5),
        values,
        st.booleans(),
    )


def _mutate(node: object, steps: list[int], value: object, delete: bool) -> None:
    for index, step in enumerate(steps):
        if isinstance(node, dict) and node:
            key = sorted(node)[step % len(node)]
        elif isinstance(node, list) and node:
            key = step % len(node)
        else:
            return
        if index == len(steps) - 1 or not isinstance(node[key], dict | list):  # type: ignore[index]
            if delete:
                del node[key]  # type: ignore[attr-defined]
            else:
                node[key] = value  # type: ignore[index]
            return
        node = node[key]  # type: ignore[index]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=_mutations())
def test_every_reader_accepts_a_mutated_manifest_and_verifies_or_names_what_is_wrong(
    published: Path, tmp_path_factory: pytest.TempPathFactory, mutation: tuple
) -> None:
    """A real manifest with one value replaced or removed: each reader either accepts it (and
    what it verifies is what is there) or raises a named omniforge error, never another."""
    copy = Path(shutil.copytree(published, tmp_path_factory.mktemp("mutated") / "set"))
    manifest = json.loads((copy / MANIFEST_FILENAME).read_text())
    _mutate(manifest, *mutation)
    (copy / MANIFEST_FILENAME).write_text(json.dumps(manifest))
    for read in (
        lambda: load_manifest(copy),
        lambda: verify_all(copy),
        lambda: load_session(copy, "projection", "fp32"),
    ):
        with contextlib.suppress(OmniforgeError):
            read()
    shutil.rmtree(copy)


def test_a_gate_free_publish_writes_what_every_reader_reads(published: Path) -> None:
    manifest = load_manifest(published)
    assert sorted(a.name for a in manifest.artifacts) == [
        "projection/fp32",
        "projection/int8",
        "talker_fused/fp32",
        "talker_fused/hybrid",
    ]
    assert verify_all(published) == [a.name for a in manifest.artifacts]


# --- what a second reader of the custody code found ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["artifacts"][0].update(path="p\ud800"), "not a path this system can name"),
        (lambda m: m["artifacts"][0].update(path="a*b"), "not a relative path inside the set"),
        (
            lambda m: next(a for a in m["artifacts"] if "prefill" in a["graphs"])["graphs"][
                "prefill"
            ].update(folder="decode"),
            r"graphs of one artifact lie in distinct subfolders",
        ),
        (
            lambda m: m["rejected"].append(
                {"component": "projection", "variant": "fp32", "reasons": [], "refused_by": []}
            ),
            "artifacts repeat the component/variant",
        ),
    ],
)
def test_more_malformed_manifests_are_named(copy: Path, change: object, message: str) -> None:
    _edit(copy, change)
    with pytest.raises(ArtifactError, match=message):
        verify_all(copy)


def test_an_integer_too_long_to_read_is_named(copy: Path) -> None:
    path = copy / MANIFEST_FILENAME
    path.write_text(
        path.read_text().replace('"manifest_version": 2', '"manifest_version": ' + "9" * 5000)
    )
    with pytest.raises(ArtifactError, match="not JSON this omniforge reads"):
        load_manifest(copy)


def test_a_linked_file_or_a_link_loop_is_refused(copy: Path, tmp_path: Path) -> None:
    from omniforge.errors import WorkspaceError

    folder = copy / "projection" / "fp32"
    data = folder / DATA_FILENAME
    outside = tmp_path / "elsewhere.data"
    shutil.move(data, outside)
    data.symlink_to(outside)
    with pytest.raises(WorkspaceError, match="a symlink"):
        load_session(copy, "projection", "fp32")
    shutil.rmtree(copy / "projection" / "int8")
    (copy / "projection" / "int8").symlink_to(copy / "projection" / "int8")
    with pytest.raises(ArtifactError, match="cannot be resolved"):
        load_session(copy, "projection", "int8")


def test_an_artifacts_own_manifest_must_agree_with_the_sets(copy: Path) -> None:
    own = copy / "projection" / "fp32" / MANIFEST_FILENAME
    manifest = read_json(own)
    manifest["artifact"]["metrics"]["parity"]["cosine"] = 0.5
    write_json(own, manifest)
    for read in (lambda: verify_all(copy), lambda: load_session(copy, "projection", "fp32")):
        with pytest.raises(CustodyError, match="otherwise than the set's manifest"):
            read()


def test_private_copies_of_killed_loads_are_swept(published: Path, tmp_path: Path) -> None:
    from omniforge.runtime.custody import PRIVATE_COPY, sweep_private_copies

    stale = tmp_path / f"{PRIVATE_COPY}999999999-abc"
    stale.mkdir()
    alive = tmp_path / f"{PRIVATE_COPY}{os.getpid()}-abc"
    alive.mkdir()
    assert sweep_private_copies(tmp_path) == [stale]
    assert not stale.exists() and alive.exists()


def test_numbers_past_float_range_are_named() -> None:
    with pytest.raises(ValueError, match="GenerationConfig.temperature must be finite"):
        GenerationConfig(temperature=10**400)
