"""Errors of the study mode."""

from __future__ import annotations

from dms.errors import DmsError


class StudyError(DmsError):
    """A study request cannot be done as asked; the message names the study and the problem."""


class UnknownStudyError(StudyError, LookupError):
    """No open study has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
