"""Where a secret could have leaked to: every place a study writes, read back as bytes and searched."""

from pathlib import Path


def where(needles: list[bytes], places: dict[str, bytes]) -> list[str]:
    """The names of the places holding any of `needles`."""
    return [name for name, data in places.items() if any(n in data for n in needles)]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (a study's working folder, Ray's results and logs, an artifact store)."""
    return {str(p): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}
