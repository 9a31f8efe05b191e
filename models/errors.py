"""Error root of the ``models`` package."""


class ModelError(Exception):
    """Base of every error raised by ``models``."""


class ConfigError(ModelError):
    """A configuration file is malformed or contradictory; the message names the file, line and field."""
