"""Operators, roles and what each role may do."""

from __future__ import annotations

import hmac
from enum import StrEnum

from models.config import OperatorConfig, Role, StationConfig


class Permission(StrEnum):
    READ = "read"  # points, alarms, SOE, history
    CONTROL = "control"  # select / operate / cancel
    ACKNOWLEDGE = "acknowledge"  # acknowledge and shelve alarms
    TAG = "tag"  # place and remove tags
    MANUAL_ENTRY = "manual_entry"  # substitute values
    STUDY = "study"  # open and run study cases, edit switching orders (engineers)


_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.CONTROL, Permission.ACKNOWLEDGE, Permission.TAG}),
    Role.ENGINEER: frozenset(Permission),
    Role.ADMIN: frozenset(Permission),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in _GRANTS[role]


class Authenticator:
    """Resolves bearer tokens to configured operators (constant-time comparison)."""

    def __init__(self, config: StationConfig) -> None:
        self._operators = config.operators

    def operator_for_token(self, token: str) -> OperatorConfig | None:
        found = None
        for op in self._operators:
            if hmac.compare_digest(op.token.encode(), token.encode()):
                found = op
        return found
