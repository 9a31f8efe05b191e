"""Error root of the DMS applications: every error raised by ``dms`` derives from :class:`DmsError`."""

from __future__ import annotations


class DmsError(Exception):
    """Base class of all DMS application errors."""
