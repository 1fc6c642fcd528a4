"""Artifact directories on disk: atomic writes, external data, sizes, hashes, signatures.

An artifact is a directory holding ``model.onnx`` and its external data ``model.onnx.data``.
Its size is the size of the whole directory, never of the ``.onnx`` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omniforge.errors import ArtifactError

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.onnx"
DATA_FILENAME = "model.onnx.data"
# Written beside an exported graph: the model source's record, for the manifest.
SOURCE_FILENAME = "source.json"
# Tensors at or above this size go to the external data file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1024


@dataclass(frozen=True)
class FileRecord:
    name: str
    bytes: int
    sha256: str


def variant_dir(root: Path, component: str, variant: str) -> Path:
    """``<root>/<component>/<variant>``: the layout dvc.yaml's templates follow too."""
    return Path(root) / component / variant


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; on success it replaces ``final`` at once.

    A killed or failed stage leaves only a ``.tmp`` sibling behind (removed on the next run),
    never a half-written directory under the final name. Writing into a fresh directory also
    avoids onnx's habit of appending to an existing external-data file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        # Readable by everyone: onnx writes external data with mode 0600.
        for path in tmp.rglob("*"):
            if path.is_file():
                path.chmod(0o644)
        tmp.chmod(0o755)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), keys sorted for stable diffs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    return json.loads(path.read_text())


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def artifact_files(directory: Path) -> list[FileRecord]:
    """Every file of an artifact directory with its size and sha256, sorted by name."""
    directory = Path(directory)
    return [
        FileRecord(p.relative_to(directory).as_posix(), p.stat().st_size, sha256_file(p))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    ]


def artifact_bytes(directory: Path) -> dict[str, int]:
    """Sizes of an artifact: the graph, its external data, and the total on disk."""
    directory = Path(directory)
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    graph = (directory / MODEL_FILENAME).stat().st_size
    return {"graph_bytes": graph, "external_data_bytes": total - graph, "total_bytes": total}


def model_path(directory: Path) -> Path:
    path = Path(directory) / MODEL_FILENAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MODEL_FILENAME} in this artifact directory")
    return path


def save_model(model: Any, directory: Path) -> Path:
    """Save an onnx ModelProto into ``directory`` with all weights in one external data file."""
    import onnx

    directory = Path(directory)
    target = directory / MODEL_FILENAME
    if (directory / DATA_FILENAME).exists():
        raise ArtifactError(f"{directory / DATA_FILENAME} exists: onnx would append to it")
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILENAME,
        size_threshold=EXTERNAL_DATA_THRESHOLD_BYTES,
        convert_attribute=True,
    )
    return target


def save_ir_model(model: Any, directory: Path) -> Path:
    """Save an onnx_ir Model (the exporter's own) with its weights as external data.

    Streams the tensors from the exporter's memory: no second in-memory protobuf copy of
    the weights, which matters for the 5.4 GB talker.
    """
    import onnx_ir

    directory = Path(directory)
    if (directory / DATA_FILENAME).exists():
        raise ArtifactError(f"{directory / DATA_FILENAME} exists: onnx would append to it")
    target = directory / MODEL_FILENAME
    threshold = EXTERNAL_DATA_THRESHOLD_BYTES
    onnx_ir.save(model, target, external_data=DATA_FILENAME, size_threshold_bytes=threshold)
    return target


def _dim(dim: Any) -> int | str | None:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    if dim.HasField("dim_param"):
        return dim.dim_param
    return None


def _describe(values: Any) -> list[dict[str, Any]]:
    import onnx

    out = []
    for value in values:
        tensor = value.type.tensor_type
        out.append(
            {
                "name": value.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                "shape": [_dim(d) for d in tensor.shape.dim],
            }
        )
    return out


def graph_signature(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs and outputs (name, dtype, symbolic shape), read without the weights."""
    import onnx

    model = onnx.load(str(model_path(directory)), load_external_data=False)
    return {"inputs": _describe(model.graph.input), "outputs": _describe(model.graph.output)}


def check_artifact(directory: Path) -> None:
    """Fail if the graph is invalid or an external tensor lies outside its data file.

    ``onnx.checker.check_model`` by path does not notice a truncated data file: the
    offsets are checked here explicitly.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = model_path(directory)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise ArtifactError(f"{path}: invalid ONNX graph: {err}") from None
    model = onnx.load(str(path), load_external_data=False)
    sizes: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        data = path.parent / info.location
        if info.location not in sizes:
            if not data.is_file():
                raise ArtifactError(f"{path}: external data file {info.location} is missing")
            sizes[info.location] = data.stat().st_size
        end = (info.offset or 0) + (info.length or 0)
        if end > sizes[info.location]:
            raise ArtifactError(
                f"{data}: truncated: tensor {tensor.name} ends at byte {end}, "
                f"file has {sizes[info.location]}"
            )


def records_as_dicts(records: list[FileRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
