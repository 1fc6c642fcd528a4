"""Releasing published artifacts the DVC way: artifacts in dvc.yaml, version tags, a remote.

``omniforge release``:

1. verifies ``models/published`` (every file against its sha256) and that it is what
   ``dvc.lock`` records, committed;
2. declares one DVC artifact per published component-variant in ``dvc.yaml`` (through DVC's
   own API), with the sha256 of its files in ``meta``, and commits ``dvc.yaml`` if that
   changed it;
3. tags each artifact whose bytes changed since its last version ``<name>@v<semver>``
   (GTO's convention, which ``dvc artifacts get`` reads), a new artifact ``v0.1.0``;
4. pushes the pipeline's outputs to the default DVC remote.

Then anyone with the repository and the remote runs ``dvc artifacts get <repo> <name>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from omniforge.errors import OmniforgeError
from omniforge.runtime.custody import verify_all
from omniforge.runtime.manifest import ArtifactEntry, PublishedSet, load_manifest

log = logging.getLogger(__name__)

PUBLISHED = Path("models/published")
PUBLISH_STAGE = "publish"
FIRST_VERSION = (0, 1, 0)
BUMPS = ("major", "minor", "patch")


class ReleaseError(OmniforgeError):
    """The workspace is not in a state that can be released (uncommitted, not reproduced)."""


@dataclass(frozen=True)
class Release:
    name: str
    version: str | None  # None: unchanged since its last version
    sha256: str


def artifact_name(entry: ArtifactEntry) -> str:
    return f"{entry.component}-{entry.variant}"


def content_digest(entry: ArtifactEntry) -> str:
    """One sha256 over an artifact's files (names and hashes), the model card included."""
    lines = sorted(f"{f.name} {f.sha256}" for f in entry.files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def dvc_repo(repo: Path) -> Iterator[Any]:
    """DVC's Repo of ``repo``; what DVC refuses (no DVC project, a remote it cannot reach)
    becomes a ReleaseError that says so."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc:
            yield dvc
    except NotDvcRepoError:
        raise ReleaseError(
            f"{repo} is not a DVC project (no .dvc folder): run `omniforge release` in the "
            "omniforge repository whose pipeline published the models"
        ) from None
    except DvcException as err:
        raise ReleaseError(f"DVC refused: {err}") from None


def check_releasable(repo: Path) -> None:
    """What is published is reproduced by the committed pipeline."""
    if _git(repo, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise ReleaseError(
            f"{repo} is not in a git repository: run `omniforge release` in the omniforge "
            "repository whose pipeline published the models"
        )
    if _git(repo, "status", "--porcelain", "--", "dvc.lock", "dvc.yaml", "params.yaml"):
        raise ReleaseError(
            "dvc.lock, dvc.yaml or params.yaml has uncommitted changes: commit the run you "
            "mean to release first (`git commit dvc.lock params.yaml metrics -m ...`)"
        )
    with dvc_repo(repo) as dvc:
        stale = dvc.status(targets=[PUBLISH_STAGE])
    if stale:
        raise ReleaseError(
            f"the publish stage is not up to date ({stale}): run `dvc repro` (or "
            "`dvc checkout` to restore the committed outputs) before releasing"
        )


def declare_artifacts(repo: Path, manifest: PublishedSet) -> bool:
    """One DVC artifact per published component-variant in dvc.yaml; True if it changed."""
    from dvc.annotations import Artifact

    dvc_yaml = repo / "dvc.yaml"
    before = dvc_yaml.read_text()
    with dvc_repo(repo) as dvc:
        for entry in manifest.artifacts:
            dvc.artifacts.add(
                artifact_name(entry),
                Artifact(
                    path=f"{PUBLISHED.as_posix()}/{entry.path}",
                    type="model",
                    desc=f"{entry.component} ({entry.variant}), vetted by omniforge",
                    labels=[entry.component, entry.variant, entry.graph_kind],
                    meta={"sha256": content_digest(entry)},
                ),
            )
    withdrawn = withdraw_unpublished(dvc_yaml, {artifact_name(e) for e in manifest.artifacts})
    for name in withdrawn:
        log.info("%s: no longer published, its declaration is removed (its tags stay)", name)
    return dvc_yaml.read_text() != before


def withdraw_unpublished(dvc_yaml: Path, published: set[str]) -> list[str]:
    """Drop declarations of artifacts the gates no longer publish: a name at HEAD must fetch
    vetted bytes or not resolve at all. Comments and order of dvc.yaml are kept."""
    from ruamel.yaml import YAML

    round_trip = YAML()
    document = round_trip.load(dvc_yaml.read_text())
    artifacts = document.get("artifacts") or {}
    stale = [name for name in artifacts if name not in published]
    if stale:
        for name in stale:
            del artifacts[name]
        with dvc_yaml.open("w") as handle:
            round_trip.dump(document, handle)
    return stale


def _version(tag: str) -> tuple[int, int, int]:
    major, minor, patch = tag.rsplit("@v", 1)[1].split(".")[:3]
    return int(major), int(minor), int(patch.split("-")[0])


def last_version(repo: Path, name: str) -> tuple[tuple[int, int, int], str] | None:
    """The highest ``<name>@v*`` tag: its version and the commit it points to."""
    tags = [t for t in _git(repo, "tag", "--list", f"{name}@v*").split() if t]
    if not tags:
        return None
    tag = max(tags, key=_version)
    return _version(tag), _git(repo, "rev-list", "-n", "1", tag).strip()


def digest_at(repo: Path, commit: str, name: str) -> str | None:
    """The sha256 dvc.yaml recorded for an artifact at a commit."""
    text = _git(repo, "show", f"{commit}:dvc.yaml", check=False)
    artifacts = (yaml.safe_load(text) or {}).get("artifacts", {}) if text else {}
    return (artifacts.get(name) or {}).get("meta", {}).get("sha256")


def bump(version: tuple[int, int, int], part: str) -> tuple[int, int, int]:
    major, minor, patch = version
    if part == "major":
        return major + 1, 0, 0
    if part == "minor":
        return major, minor + 1, 0
    return major, minor, patch + 1


def plan(repo: Path, manifest: PublishedSet, part: str) -> list[Release]:
    """Which artifacts get a new version: new ones, and those whose bytes changed."""
    releases = []
    for entry in manifest.artifacts:
        name, digest = artifact_name(entry), content_digest(entry)
        last = last_version(repo, name)
        if last is None:
            version: tuple[int, int, int] | None = FIRST_VERSION
        elif digest_at(repo, last[1], name) != digest:
            version = bump(last[0], part)
        else:
            version = None
        releases.append(Release(name, "v{}.{}.{}".format(*version) if version else None, digest))
    return releases


def release(repo: Path = Path(), part: str = "minor", push: bool = True) -> list[Release]:
    """Declare, tag and push the published artifacts of ``repo``; what was released."""
    if part not in BUMPS:
        raise ReleaseError(f"--bump must be one of {BUMPS}, got {part!r}")
    repo = Path(repo).resolve()
    check_releasable(repo)
    published = repo / PUBLISHED
    verify_all(published)
    manifest = load_manifest(published)
    if declare_artifacts(repo, manifest):
        names = ", ".join(artifact_name(e) for e in manifest.artifacts)
        _git(repo, "add", "dvc.yaml")
        _git(repo, "commit", "-q", "-m", f"Declare the published artifacts: {names}")
    releases = plan(repo, manifest, part)
    for item in releases:
        if item.version:
            tag = f"{item.name}@{item.version}"
            _git(
                repo,
                "tag",
                "-a",
                tag,
                "-m",
                f"Registering artifact {item.name} version {item.version}",
            )
            log.info("tagged %s", tag)
    if push:
        with dvc_repo(repo) as dvc:
            dvc.push()
    return releases
