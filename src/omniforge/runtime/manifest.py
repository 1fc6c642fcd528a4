"""Published artifacts, verified by hash before anything loads them.

``<published>/manifest.json`` lists each artifact with its files' bytes and sha256; a
loader refuses any file whose hash differs from what the manifest says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omniforge.artifacts import read_json, sha256_file
from omniforge.errors import ArtifactError
from omniforge.runtime.session import open_session

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1


def load_manifest(published_dir: Path) -> dict[str, Any]:
    manifest = read_json(Path(published_dir) / MANIFEST_FILENAME)
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(
            f"{published_dir}: manifest version {manifest.get('manifest_version')!r}, "
            f"this omniforge reads version {MANIFEST_VERSION}"
        )
    return manifest


def find_artifact(manifest: dict[str, Any], component: str, variant: str) -> dict[str, Any]:
    for artifact in manifest["artifacts"]:
        if artifact["component"] == component and artifact["variant"] == variant:
            return artifact
    published = sorted(f"{a['component']}/{a['variant']}" for a in manifest["artifacts"])
    raise ArtifactError(f"{component}/{variant} is not published (published: {published})")


def verify_artifact(published_dir: Path, artifact: dict[str, Any]) -> Path:
    """Check every file of an artifact against the manifest's bytes and sha256."""
    directory = Path(published_dir) / artifact["path"]
    for record in artifact["files"]:
        path = directory / record["name"]
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise ArtifactError(f"{path}: {size} bytes, the manifest says {record['bytes']}")
        digest = sha256_file(path)
        if digest != record["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {digest} differs from the manifest's {record['sha256']}"
            )
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
