"""Errors a user can act on: each message names what is wrong."""


class OmniforgeError(Exception):
    """Base class for errors reported to the user without a traceback."""


class ParamsError(OmniforgeError):
    """params.yaml is malformed: unknown key, wrong type, bad value."""


class ContractError(OmniforgeError):
    """Two artifacts disagree on an interface (dims, vocabulary, id ranges)."""


class SourceError(OmniforgeError):
    """The model source (preset, checkpoint, hub cache) cannot provide what is asked."""


class ArtifactError(OmniforgeError):
    """An artifact on disk is missing, truncated, unreadable or not what its manifest says."""


class CustodyError(ArtifactError):
    """Bytes differ from the bytes validate checked: they must not be published or loaded."""


class WorkspaceError(OmniforgeError):
    """The machine or the workspace cannot do what is asked: disk full, permissions, DVC setup."""


def listing(names: list[str], limit: int = 5) -> str:
    """The first few of many names, for a message: ``a, b, c, … (12 in all)``."""
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown
