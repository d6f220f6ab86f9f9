"""constraints-min.txt pins exactly the lower bounds of pyproject.toml, so `make test-min` tests every bound."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test",)  # the extras that `make test-min` installs


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _release(version: str) -> tuple[int, ...]:
    """``2.4`` and ``2.4.0`` are the same release."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _lower_bounds() -> dict[str, str | None]:
    """Requirement name -> its ``>=`` version (``None`` when it has none)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = list(project["project"]["dependencies"])
    for extra in EXTRAS:
        requirements += project["project"]["optional-dependencies"][extra]
    bounds: dict[str, str | None] = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?(?:\s*,.*)?", requirement)
        assert match, f"cannot read the requirement {requirement!r}"
        bounds[_name(match[1])] = match[2]
    for requirement in project["build-system"]["requires"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
        if match:
            bounds[_name(match[1])] = match[2]
    return bounds


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name.strip())] = version.strip()
    return pins


def test_every_lower_bound_is_pinned_in_constraints_min() -> None:
    bounds, pins = _lower_bounds(), _pins()
    assert not [name for name, bound in bounds.items() if bound is None], "requirements without a lower bound"
    assert sorted(pins) == sorted(bounds)
    differ = {name: (bound, pins[name]) for name, bound in bounds.items()
              if bound is not None and _release(bound) != _release(pins[name])}
    assert not differ, f"pyproject.toml bound != constraints-min.txt pin: {differ}"
