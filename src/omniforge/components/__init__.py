"""The exportable components, one file each. Adding one: a new file and an entry here."""

from __future__ import annotations

from omniforge.components.base import Component
from omniforge.components.projection import Projection
from omniforge.components.talker import Talker
from omniforge.components.talker_kv import TalkerKV
from omniforge.errors import ParamsError

COMPONENTS: dict[str, Component] = {c.name: c for c in (Talker(), TalkerKV(), Projection())}


def get_component(name: str) -> Component:
    try:
        return COMPONENTS[name]
    except KeyError:
        raise ParamsError(f"unknown component '{name}' (known: {sorted(COMPONENTS)})") from None


__all__ = ["COMPONENTS", "Component", "get_component"]
