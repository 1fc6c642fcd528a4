"""The manifests of published artifacts: one typed schema, read by every reader.

Two kinds of file, both ``manifest.json``:

- a published set's, ``<published>/manifest.json``: every artifact's entry, what the gates
  refused, the toolchain and the params of the run (:class:`PublishedSet`);
- one artifact's own, in its folder (e.g. fetched alone with ``dvc artifacts get``): its
  entry alone (:class:`ArtifactManifest`).

publish writes them through these models and the loader, ``omniforge verify``, ``show``,
``compare`` and ``release`` read them through these models, so every reader accepts exactly
what the writer writes. Anything else (a wrong type, an impossible number, a missing key, a
path that leaves the set) is an :class:`~omniforge.errors.ArtifactError` naming the file and
the key.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from omniforge.artifacts import FileRecord, read_json
from omniforge.errors import ArtifactError

MANIFEST_FILENAME = "manifest.json"
# 2: an artifact lists its graphs by role (one mechanism for one graph or several).
MANIFEST_VERSION = 2
# Larger than any file this project writes (8 EiB), small enough for every int type.
MAX_FILE_BYTES = 1 << 63


def _relative_inside(value: str) -> str:
    """A relative POSIX path that stays inside the folder it is relative to."""
    parts = value.split("/")
    if (
        not value
        or PurePosixPath(value).is_absolute()
        or any(character in value for character in "\\*\0")
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(f"{value!r} is not a relative path inside the set (no '..', not absolute)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{value!r} is not a path this system can name") from None
    return value


RelativePath = Annotated[str, AfterValidator(_relative_inside)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FileEntry(Record):
    """One file of an artifact, relative to the artifact's folder."""

    name: RelativePath
    bytes: Annotated[int, Field(ge=0, lt=MAX_FILE_BYTES)]
    sha256: Sha256

    def record(self) -> FileRecord:
        return FileRecord(self.name, self.bytes, self.sha256)


class Metrics(Record):
    """The figures that vetted an artifact: validate's, benchmark's, and their headline."""

    parity: dict[str, Any]
    benchmark: dict[str, Any]
    headline: dict[str, Any]


Signature = dict[Literal["inputs", "outputs"], list[dict[str, Any]]]


class GraphEntry(Record):
    """One graph of an artifact: where it lies ("": the artifact's folder) and its I/O."""

    folder: Literal[""] | RelativePath
    io: Signature
    # The built graph it is: ``<component>/<variant>`` (a hybrid's prefill: talker_kv/int8).
    built: str


class ArtifactEntry(Record):
    """One published artifact: where it lies, its graphs by role, its files and figures."""

    component: Name
    variant: Name
    graph_kind: str
    path: RelativePath
    # Role -> graph. One graph lies in the artifact's folder (role "model"); several lie in
    # subfolders (a hybrid pair's prefill/decode; Token2Wav's conditioning/dit/vocoder).
    graphs: Annotated[dict[Name, GraphEntry], Field(min_length=1)]
    files: Annotated[list[FileEntry], Field(min_length=1)]
    metrics: Metrics
    source: dict[str, Any] | None

    @property
    def name(self) -> str:
        return f"{self.component}/{self.variant}"

    def records(self) -> list[FileRecord]:
        return [entry.record() for entry in self.files]

    def graph_folders(self) -> dict[str, str]:
        """Role -> subfolder of each graph ("" for an artifact's only graph)."""
        return {role: graph.folder for role, graph in self.graphs.items()}

    @model_validator(mode="after")
    def _files_unique(self) -> ArtifactEntry:
        names = [entry.name for entry in self.files]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"files lists {repeated} more than once")
        folders = list(self.graph_folders().values())
        if len(folders) > 1 and ("" in folders or len(set(folders)) < len(folders)):
            raise ValueError(f"graphs of one artifact lie in distinct subfolders, got {folders}")
        return self


class Refusal(Record):
    """A candidate the gates held back, and why."""

    component: Name
    variant: Name
    reasons: list[str]
    refused_by: list[str]


class PublishedSet(Record):
    manifest_version: Literal[2]
    artifacts: list[ArtifactEntry]
    rejected: list[Refusal]
    toolchain: dict[str, str]
    params: dict[str, Any]

    @model_validator(mode="after")
    def _names_unique(self) -> PublishedSet:
        for what, values in (
            (
                "component/variant",
                [a.name for a in self.artifacts]
                + [f"{r.component}/{r.variant}" for r in self.rejected],
            ),
            ("path", [a.path for a in self.artifacts]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"artifacts repeat the {what} {repeated}")
        return self

    def find(self, component: str, variant: str) -> ArtifactEntry:
        for artifact in self.artifacts:
            if artifact.component == component and artifact.variant == variant:
                return artifact
        published = sorted(a.name for a in self.artifacts)
        raise ArtifactError(f"{component}/{variant} is not published (published: {published})")


class ArtifactManifest(Record):
    manifest_version: Literal[2]
    artifact: ArtifactEntry
    toolchain: dict[str, str]
    params: dict[str, Any]


_Parsed = TypeVar("_Parsed", bound=Record)


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"{path}: not a manifest this omniforge reads"]
    for item in err.errors()[:8]:
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"  {key}: missing")
        elif item["type"] == "literal_error" and key == "manifest_version":
            lines.append(
                f"  manifest_version: {item.get('input')!r}, this omniforge reads version "
                f"{MANIFEST_VERSION}"
            )
        else:
            value = repr(item.get("input"))
            value = value if len(value) <= 60 else value[:57] + "..."
            lines.append(f"  {key}: {item['msg']} (got {value})")
    if len(err.errors()) > 8:
        lines.append(f"  … {len(err.errors()) - 8} more")
    return "\n".join(lines)


def _parse(kind: type[_Parsed], raw: Any, path: Path) -> _Parsed:
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found a {type(raw).__name__}")
    try:
        return kind.model_validate(raw)
    except ValidationError as err:
        raise ArtifactError(_describe(err, path)) from None


def parse_set(raw: Any, path: Path) -> PublishedSet:
    """A published set's manifest from its parsed JSON (``path`` names it in errors)."""
    if isinstance(raw, dict) and "artifact" in raw and "artifacts" not in raw:
        raise ArtifactError(
            f"{path}: one artifact's manifest, not a published set's: load the folder itself"
        )
    return _parse(PublishedSet, raw, path)


def parse_artifact(raw: Any, path: Path) -> ArtifactManifest:
    """One artifact's own manifest from its parsed JSON."""
    if isinstance(raw, dict) and "artifacts" in raw and "artifact" not in raw:
        raise ArtifactError(
            f"{path}: not one artifact's manifest (a published set's? name the component and "
            "variant to load)"
        )
    return _parse(ArtifactManifest, raw, path)


def load_manifest(published_dir: Path) -> PublishedSet:
    """The published set's manifest, or an ArtifactError naming the file and what is wrong."""
    path = Path(published_dir) / MANIFEST_FILENAME
    return parse_set(read_json(path), path)


def read_artifact(folder: Path) -> ArtifactEntry:
    """The entry an artifact folder's own manifest.json holds."""
    path = Path(folder) / MANIFEST_FILENAME
    return parse_artifact(read_json(path), path).artifact
