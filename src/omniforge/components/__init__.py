"""The exportable graphs, one file each; a component's name is its file's name.

Adding a component is a new file here (a :class:`Component` subclass whose ``name`` is the
file's stem) and its name under ``components`` in params.yaml. Modules are imported on
first use, so listing the names imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from omniforge.components.base import Component
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
def get_component(name: str) -> Component:
    """The component defined in ``components/<name>.py``."""
    if name not in component_names():
        raise ParamsError(f"unknown component '{name}' (known: {list(component_names())})")
    module = importlib.import_module(f"{__name__}.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Component)
        and value.__module__ == module.__name__
        and getattr(value, "name", None) == name
    ]
    if len(found) != 1:
        raise ParamsError(
            f"{module.__file__}: expected one Component subclass named '{name}', found {len(found)}"
        )
    return found[0]()


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
    for section, mapping in (
        ("validate.shapes", params.validate_.shapes),
        ("benchmark.lengths", params.benchmark.lengths),
    ):
        for name in sorted(set(mapping) - set(known)):
            log.warning("%s: %s.%s names no component: ignored", where, section, name)


__all__ = ["Component", "check_component_names", "component_names", "get_component"]
