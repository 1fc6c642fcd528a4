"""The local Hugging Face hub cache: a hub id resolves to a cached snapshot, never a download."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omniforge.errors import SourceError
from omniforge.sources.checkpoint_config import CONFIG_NAME, INDEX_NAME

log = logging.getLogger(__name__)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (as huggingface_hub reads it).

    huggingface_hub reads these variables once, at import; reading them here lets a test or a
    stage point at another cache without re-importing it.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_repo_cache(hub_id: str, cache_dir: Path | None = None) -> Path:
    """The cache folder of one model repo: ``<cache>/models--<org>--<name>``."""
    return (cache_dir or hub_cache_dir()) / ("models--" + hub_id.replace("/", "--"))


def fetch_command(hub_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"hf download {hub_id}{rev} --include config.json {INDEX_NAME} '*.safetensors'"
        "  (huggingface-cli download with older huggingface_hub)"
    )


def resolve_hub_snapshot(
    hub_id: str, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str]:
    """The snapshot directory and commit hash of ``hub_id`` at ``revision``, from the cache only.

    Never touches the network. A repo, revision or config.json that is not cached raises a
    SourceError that says how to fetch it.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        found = try_to_load_from_cache(hub_id, CONFIG_NAME, cache_dir=cache, revision=revision)
    except (HFValidationError, ValueError) as err:
        raise SourceError(f"model.hub_id '{hub_id}': not a valid hub id: {err}") from None
    if not isinstance(found, str):
        raise SourceError(
            f"model.hub_id '{hub_id}' (revision {revision or 'main'}) is not in the local hub "
            f"cache {cache}: a build never downloads. Fetch it first with\n"
            f"    {fetch_command(hub_id, revision)}\n"
            "or set model.path to a local checkpoint directory."
        )
    snapshot = Path(found).parent
    log.info("hub id %s (revision %s): snapshot %s", hub_id, revision or "main", snapshot)
    return snapshot, snapshot.name
