"""The family registry: a family is one file in this folder (a `FAMILY = Family(...)` value) plus one entry here.

Tests are parametrised over FAMILIES, so a new entry is covered without a new test. register() adds a
family at run time (a plugin, or a test).
"""

from __future__ import annotations

from search_spaces import cnn, hybrid, scratch, transformers
from search_spaces.space import Family, SearchSpace, pinned

FAMILIES: dict[str, Family] = {f.name: f for f in (scratch.FAMILY, cnn.FAMILY, transformers.FAMILY, hybrid.FAMILY)}
ALL = "all"  # --family all: one study across every family under one budget


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose one of: {', '.join([*FAMILIES, ALL])}") from None


def search_space(family: str, arch: str | None = None, standins: bool = False) -> SearchSpace:
    """The study's space for --family (a name or `all`), --arch and --standins; ValueError on bad input."""
    families = tuple(FAMILIES.values()) if family == ALL else (get_family(family),)
    pinned(families, arch)
    return SearchSpace(families, standins, arch)
