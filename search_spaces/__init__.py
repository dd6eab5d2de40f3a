"""The family registry: a family is one file in this folder (a `FAMILY = Family(...)` value) plus one entry here.

Tests are parametrised over FAMILIES, so a new entry is covered without a new test. register() adds a
family at run time (a plugin, or a test); a process that did not register it (a scoring process loading a
checkpoint) finds it at the top level of the module defining it, which the checkpoint names (get_family), when
that module is in this package or listed in ARTSWEEP_FAMILY_MODULES.
"""

from __future__ import annotations

import importlib
import os

from search_spaces import cnn, hybrid, scratch, transformers
from search_spaces.space import Family, SearchSpace, pin, pinned

FAMILIES: dict[str, Family] = {f.name: f for f in (scratch.FAMILY, cnn.FAMILY, transformers.FAMILY, hybrid.FAMILY)}
ALL = "all"  # --family all: one study across every family under one budget
# comma-separated modules (or packages) outside search_spaces whose families a checkpoint may name: a plugin's
FAMILY_MODULES_ENV = "ARTSWEEP_FAMILY_MODULES"


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str, module: str | None = None) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise.

    One not registered in this process (added at run time elsewhere) is looked for at the top level of `module`,
    the module defining it (Family.module, as its checkpoint records it), and registered. Only the module's name
    comes from the checkpoint: the code run is that module as installed here, never anything stored with the
    checkpoint, so a family's code cannot travel in a file the way a pickled one would. And importing a module
    runs it, so only this package's modules and those the user lists in ARTSWEEP_FAMILY_MODULES are imported: a
    checkpoint naming any other (an altered one: `os`, an installed package) is refused with ValueError."""
    if name not in FAMILIES and module:
        _check_importable(name, module)
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


def family_modules() -> list[str]:
    """The modules get_family may import: this package, and those ARTSWEEP_FAMILY_MODULES lists (each with its
    submodules: `myplugin` admits `myplugin.families`)."""
    listed = os.environ.get(FAMILY_MODULES_ENV, "").split(",")
    return [__name__, *(m.strip() for m in listed if m.strip())]


def _check_importable(name: str, module: str) -> None:
    if not any(module == m or module.startswith(f"{m}.") for m in family_modules()):
        raise ValueError(
            f"family {name!r} is defined in module {module!r}, which is outside {__name__} and not listed in "
            f"{FAMILY_MODULES_ENV}: not imported (importing runs its code); if you trust it, set "
            f"{FAMILY_MODULES_ENV}={module}"
        )


def search_space(family: str, arch: str | None = None, standins: bool = False, pins=()) -> SearchSpace:
    """The study's space for --family (a name or `all`), --arch, --standins and --set (KNOB=VALUE texts, or the
    {knob: value} a study recorded); ValueError on bad input."""
    families = tuple(FAMILIES.values()) if family == ALL else (get_family(family),)
    pinned(families, arch)
    return SearchSpace(families, standins, arch, pin(families, pins))
