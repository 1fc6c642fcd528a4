"""Published artifacts, verified by hash before anything loads them.

Two ways in:

- a published set: ``<published>/manifest.json`` lists every artifact; name one by
  component and variant;
- one artifact folder on its own (e.g. fetched with ``dvc artifacts get``): its
  ``manifest.json`` describes it alone.

Either way the folder must hold exactly the files its entry lists, each with its bytes and
sha256; anything else is refused with the file and the problem named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omniforge.artifacts import DECODE, PREFILL, FileRecord, check_files, read_json_object
from omniforge.errors import ArtifactError
from omniforge.runtime.session import open_session
from omniforge.runtime.talker import OnnxTalker

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1
ENTRY_KEYS = ("component", "variant", "path", "files")


def _check_version(manifest: dict[str, Any], path: Path) -> None:
    if manifest["manifest_version"] != MANIFEST_VERSION:
        raise ArtifactError(
            f"{path}: manifest version {manifest['manifest_version']!r}, "
            f"this omniforge reads version {MANIFEST_VERSION}"
        )


def _check_entry(entry: Any, path: Path) -> dict[str, Any]:
    if not isinstance(entry, dict) or not set(ENTRY_KEYS) <= set(entry):
        raise ArtifactError(
            f"{path}: an artifact entry must be an object with {', '.join(ENTRY_KEYS)}"
        )
    return entry


def load_manifest(published_dir: Path) -> dict[str, Any]:
    """The published set's manifest, or an ArtifactError naming the file and what is wrong."""
    path = Path(published_dir) / MANIFEST_FILENAME
    manifest = read_json_object(path, required=("manifest_version", "artifacts"))
    _check_version(manifest, path)
    if not isinstance(manifest["artifacts"], list):
        raise ArtifactError(f"{path}: 'artifacts' must be a list of entries")
    for entry in manifest["artifacts"]:
        _check_entry(entry, path)
    return manifest


def read_artifact(folder: Path) -> dict[str, Any]:
    """The entry an artifact folder's own manifest.json holds."""
    path = Path(folder) / MANIFEST_FILENAME
    manifest = read_json_object(path, required=("manifest_version",))
    _check_version(manifest, path)
    if "artifact" not in manifest:
        raise ArtifactError(
            f"{path}: not one artifact's manifest (a published set's? name the component and "
            "variant to load)"
        )
    return _check_entry(manifest["artifact"], path)


def find_artifact(manifest: dict[str, Any], component: str, variant: str) -> dict[str, Any]:
    for artifact in manifest["artifacts"]:
        if artifact["component"] == component and artifact["variant"] == variant:
            return artifact
    published = sorted(f"{a['component']}/{a['variant']}" for a in manifest["artifacts"])
    raise ArtifactError(f"{component}/{variant} is not published (published: {published})")


def verify_folder(directory: Path, artifact: dict[str, Any], what: str) -> Path:
    """``directory`` holds exactly the files ``artifact`` lists, byte for byte.

    Refuses an entry that lists no files, a listed file missing, resized or with another
    sha256, and any file beside the graph that the entry does not list.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: listed in the manifest but missing")
    try:
        records = [FileRecord.from_dict(raw) for raw in artifact["files"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{directory}: malformed file record in {what}: {err!r}") from None
    check_files(directory, records, what, ignore=(MANIFEST_FILENAME,))
    return directory


def verify_artifact(published_dir: Path, artifact: dict[str, Any]) -> Path:
    """An artifact of a published set, checked against the set's manifest."""
    return verify_folder(Path(published_dir) / artifact["path"], artifact, "the manifest")


def verify_all(published_dir: Path) -> list[str]:
    """Verify every published artifact; returns ``component/variant`` of each one checked."""
    manifest = load_manifest(published_dir)
    for artifact in manifest["artifacts"]:
        verify_artifact(published_dir, artifact)
    return [f"{a['component']}/{a['variant']}" for a in manifest["artifacts"]]


def locate(
    path: Path, component: str | None = None, variant: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """A verified artifact: by component and variant in a published set, or ``path`` itself
    when it is one artifact's folder."""
    path = Path(path)
    if component is None and variant is None:
        entry = read_artifact(path)
        return verify_folder(path, entry, f"{path / MANIFEST_FILENAME}"), entry
    if component is None or variant is None:
        raise ValueError("name both the component and the variant, or neither")
    entry = find_artifact(load_manifest(path), component, variant)
    return verify_artifact(path, entry), entry


def load_session(
    path: Path, component: str | None = None, variant: str | None = None, threads: int = 0
) -> Any:
    """An onnxruntime session for a published artifact, after verifying its hashes."""
    directory, entry = locate(path, component, variant)
    if "pair" in entry:
        raise ArtifactError(
            f"{directory}: a prefill/decode pair, not one graph: load it with load_talker"
        )
    return open_session(directory, threads=threads)


def load_talker(
    path: Path,
    component: str | None = None,
    variant: str | None = None,
    threads: int | None = None,
    **options: Any,
) -> Any:
    """An ``OnnxTalker`` for a published KV-cache talker (a pair too), after verifying it.

    ``options`` go to ``OnnxTalker`` (e.g. ``max_cache_length``).
    """
    directory, entry = locate(path, component, variant)
    if "pair" in entry:
        return OnnxTalker(
            open_session(directory / DECODE, threads),
            prefill=open_session(directory / PREFILL, threads),
            **options,
        )
    return OnnxTalker(open_session(directory, threads), **options)
