"""Switching orders as a CIM SwitchingPlan-shaped JSON document, for work-force management (and back).

The document follows IEC 61968-5 (Operations / SwitchingPlan): one ``SwitchingPlan`` with its
``SwitchingStepGroup``s, each holding ``SwitchingAction``s of the CIM action classes. Field names are the CIM
attribute and role names; ``dscada:`` fields carry what CIM has no attribute for. Times are ISO 8601 UTC strings or
null. Format (``"format": "dscada.SwitchingPlan/1"``)::

    {
      "format": "dscada.SwitchingPlan/1",
      "SwitchingPlan": {
        "mRID": "<uuid5 of the order id and network>",
        "name": "<title>", "purpose": "<purpose>",
        "createdDateTime": "...", "approvedDateTime": null | "...",
        "dscada:orderId": 7, "dscada:author": "alice", "dscada:approvedBy": "", "dscada:network": "<model name>",
        "status": {"value": "draft|validated|approved|executing|completed|aborted", "dateTime": "..."},
        "SwitchingStepGroups": [{
          "mRID": "...", "sequenceNumber": 1, "isFreeSequence": false, "description": "...",
          "SwitchingActions": [{
            "class": "SwitchAction" | "GroundAction" | "TagAction",
            "mRID": "...", "sequenceNumber": 1, "isFreeSequence": false, "description": "<step note>",
            "kind": "open" | "close"            (SwitchAction, SwitchActionKind)
                  | "ground" | "remove"         (GroundAction, GroundActionKind)
                  | "place" | "remove",         (TagAction, TagActionKind)
            "OperatedSwitch" | "GroundedEquipment" | "TaggedEquipment": {"mRID": "<element mRID>", "name": "..."},
            "plannedDateTime": null, "executedDateTime": null | "...",
            "dscada:telemetered": true, "dscada:status": "pending|done|failed|skipped",
            "dscada:executedBy": "", "dscada:detail": ""
          }]
        }]
      }
    }

Steps are grouped by mode: consecutive telemetered (control-room) steps form one group and consecutive manual
(field-crew) steps another, so a crew sees the block of work it owns; ``sequenceNumber`` of an action is the order's
step number (global, not per group). Import (:func:`order_specs_from_document`) reads the same document back into
step specifications for a new draft order; the element is found by mRID first, then by name.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dms.switching.errors import PlanFormatError
from dms.switching.order import StepAction, StepSpec, SwitchingOrder

__all__ = ["FORMAT", "PlanSpec", "order_document", "order_specs_from_document"]

FORMAT = "dscada.SwitchingPlan/1"
_NS = uuid.UUID("6f1d3a52-7c3e-5b8a-9d0e-3f5a2c1b4e77")

# StepAction -> (CIM class, kind, role name of the equipment)
_CIM: dict[StepAction, tuple[str, str, str]] = {
    StepAction.OPEN: ("SwitchAction", "open", "OperatedSwitch"),
    StepAction.CLOSE: ("SwitchAction", "close", "OperatedSwitch"),
    StepAction.EARTH: ("GroundAction", "ground", "GroundedEquipment"),
    StepAction.UNEARTH: ("GroundAction", "remove", "GroundedEquipment"),
    StepAction.TAG: ("TagAction", "place", "TaggedEquipment"),
    StepAction.UNTAG: ("TagAction", "remove", "TaggedEquipment"),
}
_FROM_CIM = {(cls, kind): action for action, (cls, kind, _role) in _CIM.items()}
_ROLE = {cls: role for cls, _kind, role in _CIM.values()}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order_document(order: SwitchingOrder) -> dict[str, Any]:
    """The order as a SwitchingPlan document (a JSON-ready dict); ``json.dumps`` it to send."""
    plan_id = uuid.uuid5(_NS, f"{order.network}/order/{order.id}")
    groups: list[dict[str, Any]] = []
    for step in order.steps:
        if not groups or groups[-1]["_telemetered"] != step.telemetered:
            n = len(groups) + 1
            groups.append({"_telemetered": step.telemetered, "mRID": str(uuid.uuid5(plan_id, f"group/{n}")),
                           "sequenceNumber": n, "isFreeSequence": False,
                           "description": "control room (telemetered)" if step.telemetered else "field crew (manual)",
                           "SwitchingActions": []})
        cls, kind, role = _CIM[step.action]
        groups[-1]["SwitchingActions"].append({
            "class": cls, "mRID": str(uuid.uuid5(plan_id, f"step/{step.number}")),
            "sequenceNumber": step.number, "isFreeSequence": False, "description": step.note, "kind": kind,
            role: {"mRID": step.target_mrid, "name": step.target},
            "plannedDateTime": None, "executedDateTime": _iso(step.executed_ms),
            "dscada:telemetered": step.telemetered, "dscada:status": step.status.value,
            "dscada:executedBy": step.executed_by, "dscada:detail": step.detail,
        })
    for g in groups:
        del g["_telemetered"]
    return {
        "format": FORMAT,
        "SwitchingPlan": {
            "mRID": str(plan_id), "name": order.title, "purpose": order.purpose,
            "createdDateTime": _iso(order.created_ms),
            "approvedDateTime": _iso(order.updated_ms) if order.approved_by else None,
            "dscada:orderId": order.id, "dscada:author": order.author, "dscada:approvedBy": order.approved_by,
            "dscada:network": order.network,
            "status": {"value": order.state.value, "dateTime": _iso(order.updated_ms)},
            "SwitchingStepGroups": groups,
        },
    }


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """What an imported document asks for: title, purpose and the steps in sequence order."""

    title: str
    purpose: str
    steps: tuple[StepSpec, ...]


def order_specs_from_document(doc: dict[str, Any] | str | bytes) -> PlanSpec:
    """Read a SwitchingPlan document (dict or JSON text); PlanFormatError naming the field when malformed.
    Targets are the equipment mRIDs (the service resolves them, falling back to the name)."""
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise PlanFormatError(f"switching plan document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PlanFormatError("switching plan document: expected a JSON object")
    if doc.get("format") != FORMAT:
        raise PlanFormatError(f"switching plan document: format is {doc.get('format')!r}, expected {FORMAT!r}")
    plan = doc.get("SwitchingPlan")
    if not isinstance(plan, dict):
        raise PlanFormatError("switching plan document: no SwitchingPlan object")
    title = plan.get("name")
    if not isinstance(title, str) or not title.strip():
        raise PlanFormatError("SwitchingPlan.name: a non-empty title is required")
    actions: list[tuple[int, StepSpec]] = []
    groups = plan.get("SwitchingStepGroups")
    if not isinstance(groups, list) or not groups:
        raise PlanFormatError(f"SwitchingPlan {title!r}: SwitchingStepGroups must be a non-empty list")
    for gi, group in enumerate(groups):
        acts = group.get("SwitchingActions") if isinstance(group, dict) else None
        if not isinstance(acts, list):
            raise PlanFormatError(f"SwitchingStepGroups[{gi}].SwitchingActions must be a list")
        for ai, act in enumerate(acts):
            where = f"SwitchingStepGroups[{gi}].SwitchingActions[{ai}]"
            if not isinstance(act, dict):
                raise PlanFormatError(f"{where}: expected an object")
            cls, kind = act.get("class"), act.get("kind")
            action = _FROM_CIM.get((cls, kind))
            if action is None:
                raise PlanFormatError(f"{where}: unsupported action class/kind {cls!r}/{kind!r} (expected "
                                      f"{', '.join(f'{c}/{k}' for c, k in _FROM_CIM)})")
            equipment = act.get(_ROLE[cls])
            if not isinstance(equipment, dict):
                raise PlanFormatError(f"{where}: {_ROLE[cls]} must be an object with mRID and name")
            target = str(equipment.get("mRID") or equipment.get("name") or "").strip()
            if not target:
                raise PlanFormatError(f"{where}: {_ROLE[cls]} has neither mRID nor name")
            seq = act.get("sequenceNumber")
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise PlanFormatError(f"{where}: sequenceNumber must be an integer, got {seq!r}")
            actions.append((seq, StepSpec(action, target, str(act.get("description") or ""))))
    numbers = [s for s, _ in actions]
    if len(set(numbers)) != len(numbers):
        raise PlanFormatError(f"SwitchingPlan {title!r}: duplicate sequenceNumber among {sorted(numbers)}")
    actions.sort(key=lambda x: x[0])
    return PlanSpec(title.strip(), str(plan.get("purpose") or ""), tuple(s for _, s in actions))
