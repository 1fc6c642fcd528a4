"""Published artifacts verified by hash, and loaded from the very bytes that were hashed.

Two ways in:

- a published set: ``<published>/manifest.json`` lists every artifact; name one by
  component and variant;
- one artifact folder on its own (e.g. fetched with ``dvc artifacts get``): its
  ``manifest.json`` describes it alone.

Either way the folder must hold exactly the files its entry lists, each with its bytes and
sha256, and lie inside the set; anything else is refused with the file and the problem
named. Loading copies each graph's files into a private folder, hashing the bytes on the way,
and onnxruntime opens that copy: a file swapped or rewritten in the artifact between the
check and the load cannot be what runs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omniforge.artifacts import (
    DECODE,
    MODEL,
    MODEL_FILENAME,
    PREFILL,
    check_digest,
    check_listing,
    check_not_linked,
    copy_hashed,
    process_alive,
)
from omniforge.errors import ArtifactError, CustodyError, WorkspaceError
from omniforge.runtime.audio_encoder import ENCODER_FILENAME, AudioEncoder, EncoderLimits
from omniforge.runtime.manifest import (
    MANIFEST_FILENAME,
    ArtifactEntry,
    load_manifest,
    read_artifact,
)
from omniforge.runtime.session import open_unverified_session
from omniforge.runtime.speakers import SPEAKERS_FILENAME, decode_speakers
from omniforge.runtime.talker import OnnxTalker
from omniforge.runtime.token2wav import Token2Wav

# A RAM-backed file system on Linux: the private copies of graphs go there when it has room.
SHARED_MEMORY = "/dev/shm"
# A private copy's folder: ``omniforge-verified-<pid>-<random>``.
PRIVATE_COPY = "omniforge-verified-"


@dataclass(frozen=True)
class Located:
    """An artifact found and listed (every file present, of its recorded size; none extra),
    not yet hashed."""

    directory: Path
    entry: ArtifactEntry
    # How messages name the record the files are checked against.
    what: str


def _inside(directory: Path, root: Path, what: str) -> Path:
    """``directory``, refused unless its real path lies inside ``root``'s."""
    try:
        inside = directory.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError) as err:  # a link loop, an unnameable path
        raise ArtifactError(f"{directory}: {what} cannot be resolved: {err}") from None
    if not inside:
        raise CustodyError(f"{directory}: {what} points outside {root} (a link leaving the set)")
    return directory


def _own_manifest_agrees(directory: Path, entry: ArtifactEntry) -> None:
    """An artifact of a set carries its own manifest (what a copy fetched alone is verified
    from): it must describe the artifact as the set's manifest does."""
    own = read_artifact(directory)
    if own != entry:
        raise CustodyError(
            f"{directory / MANIFEST_FILENAME}: describes {own.name} otherwise than the set's "
            "manifest does (files, figures or source differ): one of them was edited"
        )


def _listed(directory: Path, entry: ArtifactEntry, what: str) -> Located:
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: listed in {what} but missing")
    # Linked files could change under a check that follows them; onnx and DVC refuse them too.
    check_not_linked(directory)
    try:
        check_listing(directory, entry.records(), what, ignore=(MANIFEST_FILENAME,))
    except OSError as err:
        raise ArtifactError(
            f"{err.filename or directory}: cannot be read: {err.strerror}"
        ) from None
    return Located(directory, entry, what)


def find(path: Path, component: str | None = None, variant: str | None = None) -> Located:
    """An artifact, by component and variant in a published set, or ``path`` itself when it
    is one artifact's folder; listed but not hashed (see :func:`verify`)."""
    path = Path(path)
    if component is None and variant is None:
        return _listed(path, read_artifact(path), str(path / MANIFEST_FILENAME))
    if component is None or variant is None:
        raise ValueError("name both the component and the variant, or neither")
    entry = load_manifest(path).find(component, variant)
    directory = _inside(path / entry.path, path, f"the manifest's path {entry.path!r}")
    located = _listed(directory, entry, "the manifest")
    _own_manifest_agrees(directory, entry)
    return located


def verify(located: Located, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Hash every file of a listed artifact (but those in ``skip``) against its record."""
    for record in located.entry.records():
        if record.name not in skip:
            path = located.directory / record.name
            try:
                check_digest(path, record, located.what)
            except OSError as err:
                raise ArtifactError(f"{path}: cannot be read: {err.strerror}") from None


def verify_artifact(path: Path, component: str | None = None, variant: str | None = None) -> str:
    """Verify one artifact (see :func:`find`); returns its ``component/variant``."""
    located = find(path, component, variant)
    verify(located)
    return located.entry.name


def verify_all(published_dir: Path) -> list[str]:
    """Verify every artifact of a published set, and that the set holds nothing else;
    returns ``component/variant`` of each one checked."""
    published_dir = Path(published_dir)
    manifest = load_manifest(published_dir)
    _check_nothing_stray(published_dir, [a.path for a in manifest.artifacts])
    for entry in manifest.artifacts:
        directory = _inside(published_dir / entry.path, published_dir, f"path {entry.path!r}")
        verify(_listed(directory, entry, "the manifest"))
        _own_manifest_agrees(directory, entry)
    return [a.name for a in manifest.artifacts]


def _check_nothing_stray(root: Path, paths: list[str]) -> None:
    """Every file or folder of a set is its manifest, an artifact's, or on the way to one."""
    artifacts = {Path(p) for p in paths}
    on_the_way = {parent for p in artifacts for parent in p.parents}
    for item in sorted(root.rglob("*")):
        relative = item.relative_to(root)
        if relative in artifacts or (relative in on_the_way and item.is_dir()):
            continue
        if relative == Path(MANIFEST_FILENAME) or any(a in relative.parents for a in artifacts):
            continue
        kind = "folder" if item.is_dir() else "file"
        raise CustodyError(
            f"{item}: a {kind} the manifest does not list (a published set holds its manifest "
            "and its artifacts only)"
        )


def read_verified(located: Located, name: str) -> bytes:
    """A small file of a listed artifact (e.g. its speakers), read once into memory and
    refused unless those bytes have the sha256 its record lists: what is parsed is what was
    hashed."""
    records = {record.name: record for record in located.entry.records()}
    path = located.directory / name
    if name not in records:
        raise CustodyError(f"{path}: needed, but {located.what} does not list it")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: cannot be read: {err.strerror}") from None
    check_digest(path, records[name], located.what, hashlib.sha256(data).hexdigest())
    return data


def external_locations(model: Path) -> list[str]:
    """The external data files a graph's tensors name, each a relative path in its folder."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as err:  # protobuf raises its own DecodeError
        raise ArtifactError(f"{model}: not an ONNX graph: {err}") from None
    sparse = [
        tensor
        for value in proto.graph.sparse_initializer
        for tensor in (value.values, value.indices)
    ]
    locations = sorted(
        {
            ExternalDataInfo(tensor).location
            for tensor in [*_get_all_tensors(proto), *sparse]
            if uses_external_data(tensor)
        }
    )
    for location in locations:
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts or "*" in location:
            raise CustodyError(f"{model}: external data {location!r} leaves the graph's folder")
        if location == MODEL_FILENAME:
            raise CustodyError(f"{model}: names itself as its external data")
    return locations


def copy_graph(located: Located, folder: str, into: Path) -> list[str]:
    """One graph's ``model.onnx`` and external data, copied into ``into`` (a private folder)
    and hashed on the way; returns the names copied, as the entry lists them.

    Every file must be one the entry lists, and the bytes copied must have its sha256. The
    copy is what onnxruntime opens: a file swapped or rewritten in the artifact afterwards
    changes nothing that runs.
    """
    records = {record.name: record for record in located.entry.records()}
    prefix = f"{folder}/" if folder else ""

    def copy(relative: str) -> str:
        name = prefix + relative
        record = records.get(name)
        source = located.directory / name
        if record is None:
            raise CustodyError(f"{source}: the graph needs it but {located.what} does not list it")
        target = into / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = copy_hashed(source, target, record.bytes)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WorkspaceError(
                    f"no space left in {into.parent} for a private copy of {source}: free "
                    "space there, or point TMPDIR elsewhere"
                ) from None
            raise ArtifactError(
                f"{err.filename or source}: cannot be read: {err.strerror}"
            ) from None
        check_digest(source, record, located.what, digest)
        return name

    copied = [copy(MODEL_FILENAME)]
    for location in external_locations(into / MODEL_FILENAME):
        copied.append(copy(location))
    return copied


def scratch_folder(needed: int) -> Path:
    """Where a graph's private copy goes: shared memory when it has room (a copy into RAM
    costs about half of what hashing does; onto disk, several times that), else the
    system's temporary directory; refused, naming both, when neither has room."""
    candidates = [Path(SHARED_MEMORY)] if Path(SHARED_MEMORY).is_dir() else []
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        sweep_private_copies(folder)
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free >= needed + (needed >> 3) and os.access(folder, os.W_OK):
            return folder
    raise WorkspaceError(
        f"no room for a private copy of {needed / 1e9:.2f} GB to load from (in "
        f"{' or '.join(map(str, candidates))}): free space there, or point TMPDIR elsewhere"
    )


def sweep_private_copies(folder: Path) -> list[Path]:
    """Remove private copies left in ``folder`` by loads that were killed (their process is
    gone): in shared memory they would hold RAM until the next boot."""
    removed = []
    for path in folder.glob(f"{PRIVATE_COPY}*"):
        pid = path.name.removeprefix(PRIVATE_COPY).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _sessions(located: Located, threads: int | None) -> dict[str, Any]:
    """Every graph of a listed artifact as a session, by role, run from the hashed bytes.

    Each graph is copied, hashed on the way, into a private folder (mode 0700, see
    :func:`scratch_folder`) and opened from there, one at a time; the copy is removed as soon
    as its session exists. Then the artifact's other files are hashed. Any mismatch raises,
    and the sessions made so far are dropped with it.
    """
    sessions = {}
    copied: set[str] = set()
    scratch = scratch_folder(sum(record.bytes for record in located.entry.records()))
    prefix = f"{PRIVATE_COPY}{os.getpid()}-"
    for role, folder in located.entry.graph_folders().items():
        with tempfile.TemporaryDirectory(prefix=prefix, dir=scratch) as private:
            copied.update(copy_graph(located, folder, Path(private)))
            sessions[role] = open_unverified_session(Path(private), threads)
    verify(located, skip=copied)
    return sessions


def load_session(
    path: Path, component: str | None = None, variant: str | None = None, threads: int | None = None
) -> Any:
    """An onnxruntime session for a published artifact, run from the bytes its hashes cover.

    ``path``: a published set (then name ``component`` and ``variant``) or one artifact's
    folder. ``threads``: onnxruntime's intra-op threads (None: its default).
    """
    located = find(path, component, variant)
    roles = sorted(located.entry.graphs)
    if roles != [MODEL]:
        raise ArtifactError(
            f"{located.directory}: an artifact of {len(roles)} graphs ({', '.join(roles)}), not "
            "one: load a talker with load_talker, Token2Wav with load_token2wav"
        )
    return _sessions(located, threads)[MODEL]


def _roles(located: Located, *accepted: set[str]) -> None:
    roles = set(located.entry.graphs)
    if roles not in accepted:
        wanted = " or ".join(str(sorted(a)) for a in accepted)
        raise ArtifactError(
            f"{located.directory}: graphs {sorted(roles)}, not {located.entry.component}'s "
            f"kind (expected {wanted})"
        )


def load_talker(
    path: Path,
    component: str | None = None,
    variant: str | None = None,
    threads: int | None = None,
    **options: Any,
) -> OnnxTalker:
    """An ``OnnxTalker`` for a published KV-cache talker (a pair too), run from verified bytes.

    ``options`` go to ``OnnxTalker`` (e.g. ``max_cache_length``).
    """
    located = find(path, component, variant)
    _roles(located, {MODEL}, {PREFILL, DECODE})
    sessions = _sessions(located, threads)
    if MODEL in sessions:
        return OnnxTalker(sessions[MODEL], **options)
    return OnnxTalker(sessions[DECODE], prefill=sessions[PREFILL], **options)


def load_audio_encoder(
    path: Path, variant: str | None = None, threads: int | None = None
) -> AudioEncoder:
    """The audio encoder from a published set (name ``variant``) or one artifact's folder:
    its graph run from the hashed bytes, its chunking read from the bytes hashed."""
    located = find(path, AUDIO_ENCODER if variant is not None else None, variant)
    _roles(located, {MODEL})
    limits = EncoderLimits.from_bytes(
        read_verified(located, ENCODER_FILENAME), str(located.directory / ENCODER_FILENAME)
    )
    return AudioEncoder(_sessions(located, threads)[MODEL], limits)


AUDIO_ENCODER = "audio_encoder"
TOKEN2WAV = "token2wav"
TOKEN2WAV_ROLES = {"conditioning", "dit", "vocoder"}


def load_token2wav(
    path: Path, variant: str | None = "fp32", threads: int | None = None
) -> Token2Wav:
    """Token2Wav from a published set (its ``token2wav/<variant>``) or from one artifact's
    folder (``variant`` None): its three graphs, each verified and run from the hashed bytes,
    and the speakers its conditioning graph carries, parsed from the bytes hashed."""
    located = find(path) if variant is None else find(path, TOKEN2WAV, variant)
    _roles(located, TOKEN2WAV_ROLES)
    sessions = _sessions(located, threads)
    name = f"{located.entry.graph_folders()['conditioning']}/{SPEAKERS_FILENAME}"
    speakers = decode_speakers(read_verified(located, name), str(located.directory / name))
    return Token2Wav(**sessions, speakers=speakers)
