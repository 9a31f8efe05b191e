"""Study mode: engineers' what-if cases on a snapshot of real time; nothing reaches the field."""

from dms.study.case import RunKind, StudyCase, StudyRun
from dms.study.compare import StudyComparison, compare_states
from dms.study.edits import EditKind, StudyEdit
from dms.study.errors import StudyError, UnknownStudyError
from dms.study.manager import StudyManager, StudyStore, open_store

__all__ = ["EditKind", "RunKind", "StudyCase", "StudyComparison", "StudyEdit", "StudyError", "StudyManager",
           "StudyRun", "StudyStore", "UnknownStudyError", "compare_states", "open_store"]
