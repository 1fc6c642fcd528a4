"""Faults a hostile or careless user makes, on the tiny preset: each ends in a named error or
a refusal, and nothing unvalidated is published or loaded.

The unit-level faults run on the session's tiny variants; the ones that need DVC itself
(`dvc repro`, `dvc checkout`, killed stages) run on a copy of the tiny project (slow).
"""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from project import copy_project, project_env, run

from omniforge.artifacts import (
    DATA_FILENAME,
    artifact_files,
    check_not_linked,
    read_json,
    records_as_dicts,
    sha256_file,
    write_json,
)
from omniforge.errors import ArtifactError, CustodyError, SourceError, WorkspaceError
from omniforge.params import Gate, Params, parse_params
from omniforge.publish import collect_candidates, publish
from omniforge.runtime import load_session
from omniforge.runtime.manifest import MANIFEST_FILENAME
from omniforge.workspace import (
    check_dvc_cache_type,
    explain_os_error,
    sweep_stale_temporaries,
)

COMPONENTS = ["projection"]


def _flip_middle_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def built(tmp_path: Path, tiny_root: Path) -> tuple[Params, Path]:
    """A workspace with the tiny projection's variants, validate's and benchmark's records,
    and a good published set."""
    params = parse_params({"components": COMPONENTS, "assemblies": []})
    root = tmp_path / "work"
    shutil.copytree(tiny_root / "variants" / "projection", root / "variants" / "projection")
    shutil.copytree(tiny_root / "export" / "projection", root / "export" / "projection")
    files = {
        v: records_as_dicts(artifact_files(root / "variants" / "projection" / v))
        for v in params.variants
    }
    parity = {"cosine": 1.0, "max_abs_error": 0.0, "top1_agreement": 1.0}
    write_json(
        root / "validate.json",
        {"projection": {"variants": dict.fromkeys(params.variants, parity), "files": files}},
    )
    write_json(
        root / "benchmark" / "projection.json",
        {v: {"files": files[v], "latency": {}} for v in params.variants},
    )
    _publish(params, root)
    return params, root


def _publish(params: Params, root: Path) -> dict:
    candidates = collect_candidates(
        params, root / "variants", root / "validate.json", root / "benchmark"
    )
    no_thresholds = dict.fromkeys(params.variants, Gate())
    return publish(candidates, no_thresholds, root / "published", {}, params.as_dict())


# --- 1. custody: publish ships only the validated bytes ----------------------------------------


def test_a_byte_flipped_after_validate_is_refused_and_the_last_good_set_stays(
    built: tuple[Params, Path],
) -> None:
    params, root = built
    data = root / "variants" / "projection" / "fp32" / DATA_FILENAME
    good = sha256_file(data)
    _flip_middle_byte(data)
    with pytest.raises(CustodyError) as caught:
        _publish(params, root)
    message = str(caught.value)
    assert f"{data}: sha256" in message  # the built file, not publish's temporary copy
    assert "last good set stays" in message
    assert good in message and sha256_file(data) in message
    # The published set is the last good one, and loads.
    assert load_session(root / "published", "projection", "fp32") is not None


def test_benchmark_figures_of_other_bytes_are_refused(built: tuple[Params, Path]) -> None:
    params, root = built
    report = read_json(root / "benchmark" / "projection.json")
    report["int8"]["files"][0]["sha256"] = "0" * 64
    write_json(root / "benchmark" / "projection.json", report)
    with pytest.raises(CustodyError, match="benchmark timed sha256 0{64}, validate checked"):
        _publish(params, root)


def test_a_validate_report_without_hashes_is_refused(built: tuple[Params, Path]) -> None:
    params, root = built
    report = read_json(root / "validate.json")
    del report["projection"]["files"]
    write_json(root / "validate.json", report)
    with pytest.raises(CustodyError, match="re-run validate"):
        _publish(params, root)


# --- 7. the loader verifies every file, and only listed files ----------------------------------


def test_the_loader_refuses_an_entry_with_no_files(built: tuple[Params, Path]) -> None:
    _, root = built
    published = root / "published"
    manifest = read_json(published / MANIFEST_FILENAME)
    manifest["artifacts"][0]["files"] = []
    write_json(published / MANIFEST_FILENAME, manifest)
    component, variant = manifest["artifacts"][0]["component"], manifest["artifacts"][0]["variant"]
    with pytest.raises(ArtifactError, match=r"artifacts\.0\.files: List should have at least 1"):
        load_session(published, component, variant)


def test_the_loader_refuses_a_file_the_manifest_does_not_list(built: tuple[Params, Path]) -> None:
    _, root = built
    published = root / "published"
    (published / "projection" / "fp32" / "extra.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(CustodyError, match="extra.onnx.data: not listed in the manifest"):
        load_session(published, "projection", "fp32")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"manifest_version": 1, "artifacts": [', "not valid JSON at line 1"),
        (
            '<<<<<<< HEAD\n{"manifest_version": 1}\n=======\n{}\n>>>>>>> other\n',
            "merge-conflict markers",
        ),
        ("[1, 2]", "expected a JSON object, found a list"),
        ('{"manifest_version": 2}', "artifacts: missing"),
        (
            '{"manifest_version": 2, "artifacts": [{"component": "x"}]}',
            "artifacts.0.variant: missing",
        ),
        ('{"manifest_version": 1, "artifacts": []}', "reads version 2"),
    ],
)
def test_an_unreadable_manifest_is_named(
    built: tuple[Params, Path], text: str, message: str
) -> None:
    _, root = built
    manifest = root / "published" / MANIFEST_FILENAME
    manifest.write_text(text)
    with pytest.raises(ArtifactError, match=message) as caught:
        load_session(root / "published", "projection", "fp32")
    assert str(manifest) in str(caught.value)


# --- 5. named errors ---------------------------------------------------------------------------


def test_a_truncated_safetensors_shard_is_named(tmp_path: Path) -> None:
    from tiny_omni import build_tiny_omni, save_checkpoint

    from omniforge.sources.pretrained import PretrainedSource

    checkpoint = save_checkpoint(build_tiny_omni(seed=5), tmp_path / "ckpt")
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    shard = checkpoint / index["weight_map"]["talker.codec_head.weight"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    source = PretrainedSource(checkpoint)
    with pytest.raises(SourceError, match=f"{shard}: not a readable safetensors file"):
        source.talker()


def test_a_full_disk_is_named_with_the_file() -> None:
    try:
        with open("/dev/full", "w") as handle:
            handle.write("x" * 10)
    except OSError as err:
        err.filename = err.filename or "/dev/full"
        explained = explain_os_error(err)
    assert explained is not None
    assert "no space left on the device while writing /dev/full" in str(explained)


def test_a_full_disk_while_publishing_is_named_and_the_last_good_set_stays(
    built: tuple[Params, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    params, root = built
    before = (root / "published" / MANIFEST_FILENAME).read_bytes()

    def full(src: str, dst: str, **_: object) -> None:
        # As shutil.copy2 raises it: the source first, the destination second.
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(OSError) as caught:
        _publish(params, root)
    explained = explain_os_error(caught.value)
    assert explained is not None, f"not named: {caught.value!r}"
    assert "no space left on the device while writing" in str(explained)
    assert ".published.tmp-" in str(explained)  # the copy being written, not its source
    assert (root / "published" / MANIFEST_FILENAME).read_bytes() == before
    assert not list(root.glob(".published.tmp-*")), "nothing half-written is left"


def test_a_permission_error_is_named_with_the_file() -> None:
    err = PermissionError(errno.EACCES, "Permission denied", "models/variants/talker/int4")
    explained = explain_os_error(err)
    assert isinstance(explained, WorkspaceError)
    assert "permission denied on models/variants/talker/int4" in str(explained)
    assert explain_os_error(OSError(errno.EIO, "I/O error")) is None


def test_a_stage_on_a_full_disk_exits_with_the_message_not_a_traceback(tmp_path: Path) -> None:
    code = (
        "import argparse\n"
        "from pathlib import Path\n"
        "from omniforge.artifacts import atomic_directory\n"
        "from omniforge.stage import run_stage\n"
        "def main(args, params):\n"
        "    with atomic_directory(Path('models/out')), open('/dev/full', 'w') as handle:\n"
        "        handle.write('x' * 10)\n"
        "run_stage(main, argparse.ArgumentParser())\n"
    )
    (tmp_path / "params.yaml").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "no space left on the device while writing models/out" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "models").iterdir()), "nothing half-written is left"


@pytest.mark.parametrize("cache_type", ["symlink", "hardlink", "reflink,hardlink"])
def test_a_linking_dvc_cache_type_is_refused_with_the_reason(
    tmp_path: Path, cache_type: str
) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(f"[cache]\n    type = {cache_type}\n")
    with pytest.raises(WorkspaceError, match="onnxruntime refuses symlinked external data"):
        check_dvc_cache_type(tmp_path)
    (tmp_path / ".dvc" / "config").write_text("[cache]\n    type = reflink,copy\n")
    check_dvc_cache_type(tmp_path)


def test_a_hard_linked_artifact_file_is_refused(tmp_path: Path, tiny_root: Path) -> None:
    artifact = tmp_path / "fp32"
    shutil.copytree(tiny_root / "variants" / "projection" / "fp32", artifact)
    (tmp_path / "cache-object").hardlink_to(artifact / DATA_FILENAME)
    with pytest.raises(WorkspaceError, match="hard-linked into the DVC cache"):
        check_not_linked(artifact)


# --- 4. leftovers ------------------------------------------------------------------------------


def test_temporaries_of_dead_processes_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / "models" / "variants" / "talker" / f".int4.tmp-{pid}-abc"
    stale.mkdir(parents=True)
    (stale / DATA_FILENAME).write_bytes(b"\0" * 1024)
    stale_json = tmp_path / "metrics" / f".validate.json.tmp-{pid}"
    stale_json.parent.mkdir()
    stale_json.write_text("{")
    mine = tmp_path / "models" / f".fp32.tmp-{psutil.Process().pid}-xyz"
    mine.mkdir()
    removed = sweep_stale_temporaries()
    assert set(removed) == {
        Path("models/variants/talker") / stale.name,
        Path("metrics") / stale_json.name,
    }
    assert not stale.exists() and not stale_json.exists()
    assert mine.exists(), "a live process's temporary is not touched"


# --- the DVC-level faults ----------------------------------------------------------------------


@pytest.fixture
def broken(tiny_project: Path, tmp_path: Path) -> Path:
    """A copy of the tiny project to break."""
    return copy_project(tiny_project, tmp_path / "broken")


def _published_hashes(project: Path) -> dict[str, str]:
    published = project / "models" / "published"
    return {r.name: r.sha256 for r in artifact_files(published)}


@pytest.mark.slow
def test_a_byte_flipped_in_the_dvc_cache_is_never_published(broken: Path) -> None:
    before = _published_hashes(broken)
    data = broken / "models" / "variants" / "projection" / "fp32" / DATA_FILENAME
    digest = sha256_file(data)
    cache_object = next(
        p
        for p in (broken / ".dvc" / "cache" / "files" / "md5").rglob("*")
        if p.is_file() and p.stat().st_size == data.stat().st_size and sha256_file(p) == digest
    )
    _flip_middle_byte(cache_object)
    shutil.rmtree(broken / "models")
    run(["dvc", "checkout"], broken)
    assert "up to date" in run(["dvc", "status"], broken).stdout  # DVC does not notice
    params = yaml.safe_load((broken / "params.yaml").read_text())
    params["publish"]["gates"]["int4"]["min_cosine"] = 0.5  # any change that re-runs publish
    (broken / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], broken, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "projection/fp32/model.onnx.data" in output and digest in output
    assert "Traceback" not in output
    # publish changed nothing: the manifest still lists the validated hashes ...
    published = broken / "models" / "published"
    assert _published_hashes(broken)[MANIFEST_FILENAME] == before[MANIFEST_FILENAME]
    # ... and `dvc checkout` linked the same corrupt cache object into the published copy,
    # which the loader therefore refuses, while the other artifacts still load.
    with pytest.raises(CustodyError, match=f"differs from the manifest's {digest}"):
        load_session(published, "projection", "fp32")
    load_session(published, "talker", "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("components", [[], ["talker", "talker"]])
def test_no_or_repeated_components_stop_before_anything_is_touched(
    broken: Path, components: list[str]
) -> None:
    before = _published_hashes(broken)
    params = yaml.safe_load((broken / "params.yaml").read_text())
    params["components"] = components
    (broken / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], broken, check=False)
    assert result.returncode != 0
    assert "components" in result.stdout + result.stderr
    assert _published_hashes(broken) == before


def _start_stage(project: Path, args: list[str]) -> psutil.Process:
    return psutil.Process(
        subprocess.Popen(
            [sys.executable, *args],
            cwd=project,
            env=project_env(project),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
    )


def _command(process: psutil.Process) -> str:
    """A process's command line; empty for one that ended while we looked."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.slow
def test_kill_9_of_the_benchmark_stage_leaves_no_process_alive(broken: Path) -> None:
    # Without its last report the stage times every variant (none is kept): workers run.
    (broken / "metrics" / "benchmark" / "talker_kv.json").unlink()
    stage = _start_stage(
        broken,
        [
            "stages/benchmark.py",
            "--component",
            "talker_kv",
            "--variants-root",
            "models/variants",
            "--out",
            "metrics/benchmark/talker_kv.json",
            "--plot",
            "metrics/plots/talker_kv_latency.csv",
        ],
    )

    # Wait until a benchmark worker runs (more than the janitor among the children).
    def worker_running() -> bool:
        assert stage.is_running() and stage.status() != psutil.STATUS_ZOMBIE, "stage ended"
        return any("omniforge.children" in _command(c) for c in stage.children(True))

    _wait_for(worker_running)
    ours = [stage, *stage.children(recursive=True)]
    stage.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(ours, timeout=10)
    assert not alive, [_command(p) for p in alive]


def test_a_killed_stage_leaves_no_temporary_behind(tmp_path: Path) -> None:
    """A stage killed (-9) in the middle of writing its output: its janitor removes the
    half-written temporary at once, whether or not DVC ever runs the stage again."""
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "models" / "out").mkdir(parents=True)
    (tmp_path / "models" / "out" / "previous").write_text("the last good output")
    code = (
        "import argparse, time\n"
        "from pathlib import Path\n"
        "from omniforge.artifacts import atomic_directory\n"
        "from omniforge.stage import run_stage\n"
        "def main(args, params):\n"
        "    with atomic_directory(Path('models/out')) as tmp:\n"
        "        (tmp / 'model.onnx.data').write_bytes(bytes(1 << 20))\n"
        "        time.sleep(600)  # killed while writing\n"
        "run_stage(main, argparse.ArgumentParser())\n"
    )
    stage = psutil.Process(
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stderr=subprocess.DEVNULL).pid
    )
    models = tmp_path / "models"

    def temporaries() -> list[Path]:
        return list(models.glob(f".out.tmp-{stage.pid}-*"))

    _wait_for(lambda: any((t / "model.onnx.data").exists() for t in temporaries()))
    stage.send_signal(signal.SIGKILL)
    _wait_for(lambda: not temporaries(), timeout=10)
    assert (models / "out" / "previous").read_text() == "the last good output"
