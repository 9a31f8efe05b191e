"""The hardened MMS layer of the ICCP package (on open61850): server core, client core and extra codecs.

Public face of the server: :class:`MmsServer`, :class:`MmsServerConfig`, the :class:`MmsHandler` protocol and
its value types; names, variable specifications and access results come from :mod:`iccp.mms.codec`.
"""

from .codec import (
    AccessResult,
    Component,
    DataAccessCode,
    DeleteListRequest,
    DeleteScope,
    NameListRequest,
    NameScope,
    ObjectClass,
    ObjectName,
    RefusalDiagnostic,
    VariableAccess,
    VariableSpec,
)
from .server import (
    AssociationHandle,
    AssociationInfo,
    Deferred,
    DeleteResult,
    EndReason,
    ErrorClass,
    Identity,
    ListAttributes,
    MmsHandler,
    MmsServer,
    MmsServerConfig,
    VariableAttributes,
)

__all__ = [
    "AccessResult", "Component", "DataAccessCode", "DeleteListRequest", "DeleteScope", "NameListRequest",
    "NameScope", "ObjectClass", "ObjectName", "RefusalDiagnostic", "VariableAccess", "VariableSpec",
    "AssociationHandle", "AssociationInfo", "Deferred", "DeleteResult", "EndReason", "ErrorClass", "Identity",
    "ListAttributes", "MmsHandler", "MmsServer", "MmsServerConfig", "VariableAttributes",
]
