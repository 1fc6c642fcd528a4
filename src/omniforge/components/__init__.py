"""The exportable graphs and the artifacts assembled from them, one file each; the name is
the file's name.

Adding a component is a new file here (a :class:`Component` subclass whose ``name`` is the
file's stem) and its name under ``components`` in params.yaml; an assembly (an
:class:`Assembly` of components' graphs by role) is listed under ``assemblies``. Modules are
imported on first use, so listing the names imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from omniforge.components.base import ArtifactKind, Assembly, Component
from omniforge.errors import ParamsError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from omniforge.params import Params

_NOT_COMPONENTS = frozenset({"base"})


def component_names() -> tuple[str, ...]:
    """Every component this package defines, by file name, without importing them."""
    return tuple(
        sorted(
            info.name
            for info in pkgutil.iter_modules(__path__)
            if info.name not in _NOT_COMPONENTS and not info.name.startswith("_")
        )
    )


@cache
def _defined(name: str) -> ArtifactKind:
    """The component or assembly defined in ``components/<name>.py``."""
    if name not in component_names():
        raise ParamsError(f"unknown component '{name}' (known: {list(component_names())})")
    module = importlib.import_module(f"{__name__}.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ArtifactKind)
        and value.__module__ == module.__name__
        and getattr(value, "name", None) == name
    ]
    if len(found) != 1:
        raise ParamsError(
            f"{module.__file__}: expected one Component or Assembly named '{name}', found "
            f"{len(found)}"
        )
    return found[0]()


def get_component(name: str) -> Component:
    """The component (one exportable graph) defined in ``components/<name>.py``."""
    defined = _defined(name)
    if not isinstance(defined, Component):
        raise ParamsError(f"'{name}' is an assembly of other graphs, not a component to build")
    return defined


def get_assembly(name: str) -> Assembly:
    """The assembly defined in ``components/<name>.py``."""
    defined = _defined(name)
    if not isinstance(defined, Assembly):
        raise ParamsError(f"'{name}' is a component, not an assembly of components' graphs")
    return defined


def artifact_kinds(params: Params) -> list[ArtifactKind]:
    """Everything params builds or assembles: the components, then the assemblies."""
    return [
        *(get_component(name) for name in params.components),
        *(get_assembly(name) for name in params.assemblies),
    ]


def get_artifact_kind(name: str) -> ArtifactKind:
    return _defined(name)


def check_component_names(params: Params, where: str = "params") -> None:
    """Every component params builds exists; settings of unknown ones are reported, unused.

    A per-component setting (validate.shapes, benchmark.lengths) naming no component is
    ignored with a warning: deleting a component's file need not mean editing every section.
    """
    known = component_names()
    for name in params.components:
        if name not in known:
            raise ParamsError(
                f"{where}: invalid params\n  components: unknown component '{name}' "
                f"(known: {list(known)}; each is a file in src/omniforge/components/)"
            )
    for name in params.components:
        get_component(name)  # an assembly listed as a component is named
    for name in params.assemblies:
        if name not in known:
            raise ParamsError(
                f"{where}: invalid params\n  assemblies: unknown assembly '{name}' "
                f"(known: {list(known)})"
            )
        missing = sorted(set(get_assembly(name).parts.values()) - set(params.components))
        if missing:
            raise ParamsError(
                f"{where}: invalid params\n  assemblies: '{name}' is made of {missing}, which "
                "components does not build"
            )
    for section, mapping in (
        ("validate.shapes", params.validate_.shapes),
        ("benchmark.lengths", params.benchmark.lengths),
    ):
        for name in sorted(set(mapping) - set(known)):
            log.warning("%s: %s.%s names no component: ignored", where, section, name)


__all__ = [
    "ArtifactKind",
    "Assembly",
    "Component",
    "artifact_kinds",
    "check_component_names",
    "component_names",
    "get_artifact_kind",
    "get_assembly",
    "get_component",
]
