"""Write constraints.txt: every package artsweep's install pulls in (its dependencies and those of every extra in
pyproject.toml, and theirs, with environment markers evaluated on this machine), pinned to the version installed
here, so every node of a cluster (and the README's install) gets the same versions as the machine it was made on.

    pip install -e '.[dev,server]' && python cluster/constraints.py    # after changing a dependency (Python 3.11+)

A package the closure needs but this environment lacks stops the script with its name: install it first.
Local version labels are dropped (torch 2.14.1+cu130 is pinned as 2.14.1, which PyPI's wheel satisfies).
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def wanted(req: Requirement, extras: set[str]) -> bool:
    """Whether `req` applies on this machine when its package is installed with `extras` ('' = none)."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": e}) for e in extras | {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Installed version of every distribution `roots` need, transitively (canonical name -> version)."""
    pinned: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = set(req.extras)
        if name in pinned and extras <= extras_seen[name]:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"constraints.py: {req.name} is needed but not installed: pip install -e '.[dev,server]' first")
        pinned[name] = Version(dist.version).public
        extras_seen[name] = extras_seen.get(name, set()) | extras
        todo += [r for r in map(Requirement, dist.requires or []) if wanted(r, extras_seen[name])]
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project.get("optional-dependencies", {})
    roots = [Requirement(r) for r in project["dependencies"] + [r for g in groups.values() for r in g]]
    pins = closure(roots)
    pins.pop(canonicalize_name(project["name"]), None)
    header = [
        "# Every node installs with these pins: pip install -c constraints.txt -e .  (the head: -e '.[server]')",
        f"# Made by `python cluster/constraints.py` from the installed closure of artsweep's dependencies and extras "
        f"({', '.join(sorted(groups))})",
        f"# on Python {platform.python_version()}, {platform.system()} {platform.machine()}: regenerate after "
        "changing a dependency (pip install -e '.[dev,server]' first).",
    ]
    lines = header + [f"{name}=={version}" for name, version in sorted(pins.items())]
    (ROOT / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"constraints.py: {len(pins)} pins written to {ROOT / 'constraints.txt'}")


if __name__ == "__main__":
    main()
