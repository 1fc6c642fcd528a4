"""Published artifacts, verified by hash before anything loads them.

``<published>/manifest.json`` lists each artifact with its files' bytes and sha256; a
loader refuses any file whose hash differs from what the manifest says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omniforge.artifacts import FileRecord, check_files, read_json_object
from omniforge.errors import ArtifactError
from omniforge.runtime.session import open_session

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1


def load_manifest(published_dir: Path) -> dict[str, Any]:
    """The published manifest, or an ArtifactError naming the file and what is wrong."""
    path = Path(published_dir) / MANIFEST_FILENAME
    manifest = read_json_object(path, required=("manifest_version", "artifacts"))
    if manifest["manifest_version"] != MANIFEST_VERSION:
        raise ArtifactError(
            f"{path}: manifest version {manifest['manifest_version']!r}, "
            f"this omniforge reads version {MANIFEST_VERSION}"
        )
    artifacts = manifest["artifacts"]
    if not isinstance(artifacts, list) or not all(
        isinstance(a, dict) and {"component", "variant", "path", "files"} <= set(a)
        for a in artifacts
    ):
        raise ArtifactError(
            f"{path}: 'artifacts' must be a list of entries with component, variant, path and files"
        )
    return manifest


def find_artifact(manifest: dict[str, Any], component: str, variant: str) -> dict[str, Any]:
    for artifact in manifest["artifacts"]:
        if artifact["component"] == component and artifact["variant"] == variant:
            return artifact
    published = sorted(f"{a['component']}/{a['variant']}" for a in manifest["artifacts"])
    raise ArtifactError(f"{component}/{variant} is not published (published: {published})")


def verify_artifact(published_dir: Path, artifact: dict[str, Any]) -> Path:
    """The artifact's directory holds exactly the files its entry lists, byte for byte.

    Refuses an entry that lists no files, a file missing, resized or with another sha256,
    and any file beside the graph that the entry does not list.
    """
    directory = Path(published_dir) / artifact["path"]
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: listed in the manifest but missing")
    try:
        records = [FileRecord.from_dict(raw) for raw in artifact["files"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(
            f"{directory}: malformed file record in the manifest: {err!r}"
        ) from None
    check_files(directory, records, "the manifest", ignore=(MANIFEST_FILENAME,))
    return directory


def verify_all(published_dir: Path) -> list[str]:
    """Verify every published artifact; returns ``component/variant`` of each one checked."""
    manifest = load_manifest(published_dir)
    for artifact in manifest["artifacts"]:
        verify_artifact(published_dir, artifact)
    return [f"{a['component']}/{a['variant']}" for a in manifest["artifacts"]]


def load_session(published_dir: Path, component: str, variant: str, threads: int = 0) -> Any:
    """An onnxruntime session for a published artifact, after verifying its hashes."""
    manifest = load_manifest(published_dir)
    directory = verify_artifact(published_dir, find_artifact(manifest, component, variant))
    return open_session(directory, threads=threads)
