"""The family registry: a family is one file in this folder (a `FAMILY = Family(...)` value) plus one entry here.

Tests are parametrised over FAMILIES, so a new entry is covered without a new test. register() adds a
family at run time (a plugin, or a test); a process that did not register it (a scoring process loading a
checkpoint) finds it at the top level of the module defining it, which the checkpoint names (get_family).
"""

from __future__ import annotations

import importlib

from search_spaces import cnn, hybrid, scratch, transformers
from search_spaces.space import Family, SearchSpace, pinned

FAMILIES: dict[str, Family] = {f.name: f for f in (scratch.FAMILY, cnn.FAMILY, transformers.FAMILY, hybrid.FAMILY)}
ALL = "all"  # --family all: one study across every family under one budget


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str, module: str | None = None) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise.

    One not registered in this process (added at run time elsewhere) is looked for at the top level of `module`,
    the module defining it (Family.module, as its checkpoint records it), and registered. Only the module's name
    comes from the checkpoint: the code run is that module as installed here, never anything stored with the
    checkpoint, so a family's code cannot travel in a file the way a pickled one would."""
    if name not in FAMILIES and module:
        try:
            top_level = vars(importlib.import_module(module)).values()
        except ImportError as e:
            raise ValueError(f"family {name!r} is defined in {module}, which does not import here: {e}") from e
        for family in top_level:
            if isinstance(family, Family) and family.name == name:
                register(family)
    try:
        return FAMILIES[name]
    except KeyError:
        where = f" (nor a top-level value of {module})" if module else ""
        raise ValueError(f"unknown family {name!r}{where}; choose one of: {', '.join([*FAMILIES, ALL])}") from None


def search_space(family: str, arch: str | None = None, standins: bool = False) -> SearchSpace:
    """The study's space for --family (a name or `all`), --arch and --standins; ValueError on bad input."""
    families = tuple(FAMILIES.values()) if family == ALL else (get_family(family),)
    pinned(families, arch)
    return SearchSpace(families, standins, arch)
