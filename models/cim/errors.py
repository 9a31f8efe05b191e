"""Errors of the CIM importer: every problem found is collected, then raised together as one ``CimError``."""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import ModelError


@dataclass(frozen=True, slots=True)
class CimProblem:
    """One problem of one CIM object."""

    cim_class: str
    mrid: str
    name: str
    message: str

    def __str__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"{self.cim_class} {self.mrid}{label}: {self.message}"


class CimError(ModelError):
    """A CIM file cannot be imported; ``problems`` lists every problem found (nothing is returned half-loaded)."""

    def __init__(self, source: str, problems: tuple[CimProblem, ...]) -> None:
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:200])
        more = f"\n  ... and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(f"{source}: {len(problems)} CIM problem(s):\n{shown}{more}")
