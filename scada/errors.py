"""Error root of the ``scada`` package."""


class ScadaError(Exception):
    """Base of every error raised by ``scada``."""


class UnknownPointError(ScadaError):
    pass


class CommandRefused(ScadaError):
    """A command was refused before it reached the field; ``reason`` is a CommandRefusal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StorageError(ScadaError):
    pass
