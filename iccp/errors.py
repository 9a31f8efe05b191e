"""The error tree of the ICCP package: one root, one branch per layer."""

from __future__ import annotations

__all__ = [
    "IccpError",
    "MmsError",
    "MmsDecodeError",
    "MmsConnectionError",
    "MmsTimeoutError",
    "MmsServiceError",
    "AssociationRefused",
]


class IccpError(Exception):
    """Root of every error raised by the iccp package."""


class MmsError(IccpError):
    """A failure of the MMS layer (framing, association, service)."""


class MmsDecodeError(MmsError):
    """Bytes received from a peer that do not decode (the only error the iccp.mms decoders raise)."""


class MmsConnectionError(MmsError):
    """An association could not be established or was lost."""


class MmsTimeoutError(MmsError):
    """A peer did not answer in time."""


class MmsServiceError(MmsError):
    """A confirmed service failed: carries the MMS error class and code (ISO 9506-2 ServiceError).

    A server handler raises it to answer a request with a confirmed-ErrorPDU.
    """

    def __init__(self, error_class: int, code: int, message: str = "") -> None:
        self.error_class = error_class
        self.code = code
        super().__init__(message or f"MMS service error class {error_class} code {code}")


class AssociationRefused(MmsError):
    """An association was refused; ``diagnostic`` is the ACSE acse-service-user diagnostic code."""

    def __init__(self, diagnostic: int, message: str = "") -> None:
        self.diagnostic = diagnostic
        super().__init__(message or f"association refused (ACSE diagnostic {diagnostic})")
