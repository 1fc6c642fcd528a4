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
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omniforge.errors import ArtifactError, CustodyError, WorkspaceError

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.onnx"
DATA_FILENAME = "model.onnx.data"
# Written beside an exported graph: the model source's record, for the manifest.
SOURCE_FILENAME = "source.json"
# The role of an artifact's only graph, which lies in the artifact's own folder. The graphs
# of a multi-graph artifact lie in subfolders named by their roles (a hybrid talker's
# prefill and decode; Token2Wav's conditioning, dit and vocoder).
MODEL = "model"
PREFILL, DECODE = "prefill", "decode"
# Tensors at or above this size go to the external data file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1024
# Temporaries of atomic writes: ``.<name>.tmp-<pid>-<random>`` and ``.<name>.old-<pid>``.
# The pid says whose they are, so a sweep removes only those of processes that are gone.
TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")
# Hashing a file this large is worth a log line: it takes seconds.
LARGE_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class FileRecord:
    name: str
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FileRecord:
        return cls(str(raw["name"]), int(raw["bytes"]), str(raw["sha256"]))


def process_alive(pid: int) -> bool:
    """Whether a process of this pid exists (pids that no process can have are not)."""
    if pid <= 0:  # 0 and below name process groups, never the process that wrote a file
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or past any pid the system gives
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def variant_dir(root: Path, component: str, variant: str) -> Path:
    """``<root>/<component>/<variant>``: the layout dvc.yaml's templates follow too."""
    return Path(root) / component / variant


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; on success it replaces ``final`` at once.

    A failed stage removes its temporary; a killed one leaves only a ``.tmp-<pid>`` sibling
    (removed by the stage's janitor, or the next run's sweep), never a half-written directory
    under the final name. Writing into a fresh directory also avoids onnx's habit of
    appending to an existing external-data file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
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
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        # A failed write (a full disk) often names no file: name the output being written.
        err.filename = err.filename or str(final)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), keys sorted for stable diffs."""
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling renamed over it: a reader sees
    the old file or the whole new one, and a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        err.filename = err.filename or str(path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Parsed JSON, or an ArtifactError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise ArtifactError(f"{path}: cannot be read: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ArtifactError(
            f"{path}: JSON nested too deeply to be a manifest or a report"
        ) from None
    except json.JSONDecodeError as err:
        hint = ""
        if "<<<<<<<" in text or ">>>>>>>" in text:
            hint = " (it holds git merge-conflict markers: resolve them or re-run the stage)"
        raise ArtifactError(
            f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}{hint}"
        ) from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise ArtifactError(f"{path}: not JSON this omniforge reads: {err}") from None


def read_json_object(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object with the ``required`` keys, or an ArtifactError naming the file."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found a {type(value).__name__}")
    missing = [key for key in required if key not in value]
    if missing:
        raise ArtifactError(f"{path}: missing {', '.join(repr(k) for k in missing)}")
    return value


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    path = Path(path)
    size = path.stat().st_size
    if size >= LARGE_FILE_BYTES:
        log.info("sha256 of %s (%.1f GB)", path, size / 1e9)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def copy_hashed(source: Path, target: Path, size: int, chunk: int = 1 << 24) -> str:
    """Copy the first ``size`` bytes of ``source`` to a new file ``target`` (read-only), and
    return the sha256 of exactly the bytes written.

    One pass: each block read is hashed and written. Whatever happens to ``source`` later
    (rewritten in place, swapped by a rename), ``target`` holds the bytes that were hashed.
    """
    source, target = Path(source), Path(target)
    if size >= LARGE_FILE_BYTES:
        log.info("copying and hashing %s (%.1f GB)", source, size / 1e9)
    digest = hashlib.sha256()
    copied = 0
    # Each block is written by a second thread while the next is read and hashed: both
    # release the GIL, so a copy costs little more than the hash on two cores.
    with (
        open(source, "rb") as reader,
        open(target, "xb") as writer,
        ThreadPoolExecutor(1) as pool,
    ):
        writing: Future[int] | None = None
        while copied < size and (block := reader.read(min(chunk, size - copied))):
            digest.update(block)
            if writing is not None:
                writing.result()
            writing = pool.submit(writer.write, block)
            copied += len(block)
        if writing is not None:
            writing.result()
        longer = reader.read(1)
    target.chmod(0o400)
    if copied != size or longer:
        raise CustodyError(f"{source}: changed size while it was read (expected {size} bytes)")
    return digest.hexdigest()


def artifact_files(directory: Path, exclude: tuple[str, ...] = ()) -> list[FileRecord]:
    """Every file of an artifact directory with its size and sha256, sorted by name."""
    directory = Path(directory)
    return [
        FileRecord(name, path.stat().st_size, sha256_file(path))
        for path, name in _files(directory)
        if name not in exclude
    ]


def graph_folder(role: str, roles: int) -> str:
    """Where a graph lies in its artifact: the artifact's folder for its only graph, else the
    subfolder named by its role."""
    return "" if roles == 1 else role


def graph_files(graphs: dict[str, Path]) -> list[FileRecord]:
    """An artifact's files as it is published, from its graphs' built directories by role:
    a lone graph's files by name, several graphs' as ``<role>/<name>``."""
    records = []
    for role, directory in graphs.items():
        folder = graph_folder(role, len(graphs))
        prefix = f"{folder}/" if folder else ""
        records += [
            FileRecord(prefix + record.name, record.bytes, record.sha256)
            for record in artifact_files(directory)
        ]
    return records


def _files(directory: Path) -> list[tuple[Path, str]]:
    return [
        (path, path.relative_to(directory).as_posix())
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def check_listing(
    directory: Path, expected: list[FileRecord], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """The directory holds exactly the ``expected`` files, each of its recorded size.

    Raises CustodyError naming a file missing, resized, or present but not listed in
    ``what``. Hashes nothing: see :func:`check_digest`.
    """
    directory = Path(directory)
    if not expected:
        raise CustodyError(f"{directory}: {what} lists no files: nothing could be verified")
    listed = {record.name: record for record in expected}
    unlisted = [name for _, name in _files(directory) if name not in listed and name not in ignore]
    if unlisted:
        raise CustodyError(
            f"{directory / unlisted[0]}: not listed in {what} (unverified bytes beside the graph)"
        )
    for record in expected:
        path = directory / record.name
        if not path.is_file():
            raise CustodyError(f"{path}: listed in {what} but missing")
        size = path.stat().st_size
        if size != record.bytes:
            raise CustodyError(f"{path}: {size} bytes, {what} says {record.bytes}")


def check_digest(path: Path, record: FileRecord, what: str, digest: str | None = None) -> None:
    """``path`` has the sha256 ``record`` lists (``digest``: already computed from its bytes)."""
    digest = digest or sha256_file(path)
    if digest != record.sha256:
        raise CustodyError(f"{path}: sha256 {digest} differs from {what}'s {record.sha256}")


def check_files(
    directory: Path, expected: list[FileRecord], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """The directory holds exactly the ``expected`` files, byte for byte.

    Raises CustodyError naming the file and both hashes (or sizes), a file missing, or a
    file present that ``what`` does not list. Sizes are compared first: a truncated file
    fails without being hashed.
    """
    check_listing(directory, expected, what, ignore)
    for record in expected:
        check_digest(Path(directory) / record.name, record, what)


def artifact_bytes(directory: Path) -> dict[str, int]:
    """Sizes of an artifact: the graph, its external data, and the total on disk (which
    counts its data files too, e.g. speakers)."""
    directory = Path(directory)
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    graph = (directory / MODEL_FILENAME).stat().st_size
    others = sum(path.stat().st_size for path in data_files(directory))
    return {
        "graph_bytes": graph,
        "external_data_bytes": total - graph - others,
        "total_bytes": total,
    }


def graphs_bytes(graphs: dict[str, Path]) -> dict[str, int]:
    """The sizes of an artifact of one graph or several (by role), summed."""
    sizes = [artifact_bytes(directory) for directory in graphs.values()]
    return {key: sum(size[key] for size in sizes) for key in sizes[0]}


def data_files(directory: Path) -> list[Path]:
    """The files an artifact carries beside its graph (e.g. a component's speakers): every
    top-level file but the graph, its external data and the export's source record. Each
    pass hands them on unchanged."""
    graph_files = (MODEL_FILENAME, DATA_FILENAME, SOURCE_FILENAME)
    return sorted(
        path
        for path in Path(directory).iterdir()
        if path.is_file() and path.name not in graph_files
    )


def copy_data_files(src_dir: Path, dst_dir: Path) -> None:
    for path in data_files(src_dir):
        shutil.copyfile(path, Path(dst_dir) / path.name)


def model_path(directory: Path) -> Path:
    """The graph of an artifact directory, once its files are known to be plain files."""
    path = Path(directory) / MODEL_FILENAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MODEL_FILENAME} in this artifact directory")
    check_not_linked(Path(directory))
    return path


def check_not_linked(directory: Path) -> None:
    """Refuse symlinked or hard-linked files: what DVC's cache.type symlink/hardlink makes.

    onnxruntime refuses external data whose real path leaves the model folder (symlinks);
    onnx >= 1.22 refuses external data with more than one hard link; and an in-place edit
    of a hard-linked file would corrupt the DVC cache object it shares an inode with.
    """
    for path in sorted(Path(directory).rglob("*")):
        linked = path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1)
        if linked:
            kind = "a symlink" if path.is_symlink() else "hard-linked"
            raise WorkspaceError(
                f"{path}: {kind} into the DVC cache. omniforge needs plain files: set "
                "`dvc config cache.type reflink,copy` (as .dvc/config pins), then "
                "`dvc checkout --relink`"
            )


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


def describe_values(values: Any) -> list[dict[str, Any]]:
    """Name, dtype and shape (ints, symbolic names or None) of graph inputs or outputs."""
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
    return {
        "inputs": describe_values(model.graph.input),
        "outputs": describe_values(model.graph.output),
    }


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
