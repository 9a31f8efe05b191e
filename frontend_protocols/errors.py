"""Error root of the ``frontend_protocols`` package."""


class FrontendError(Exception):
    """Base of every error raised by ``frontend_protocols``."""
