"""Planned outages on the embedded sample network (no SCADA): affected customers against an independent topology
count, the notification feed, the state machine's named refusals, persistence over a reopen and the ``covering``
look-up the OMS uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.config import OperatorConfig, Role
from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.planned import (
    PlannedInputError,
    PlannedNotFoundError,
    PlannedOrigin,
    PlannedOutageError,
    PlannedOutageService,
    PlannedState,
    PlannedStateError,
    isolation_effect,
)
from oms.planned_store import NotificationKind, PlannedStore
from scada.topology import TopologyProcessor

T0 = 1_900_000_000_000  # the tests' "now"
HOUR_MS = 3_600_000
DESK = OperatorConfig("desk", Role.OPERATOR, "")


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


def _normal(model: NetworkModel) -> np.ndarray:
    return np.array([not s.open for s in model.switches], dtype=bool)


def _service(model: NetworkModel, path: Path) -> PlannedOutageService:
    closed = _normal(model)
    return PlannedOutageService(PlannedStore(path), lambda: (model, closed, "normal state"), clock=lambda: T0)


@pytest.fixture
def svc(model: NetworkModel, tmp_path: Path) -> Iterator[PlannedOutageService]:
    s = _service(model, tmp_path / "planned.sqlite")
    try:
        yield s
    finally:
        s.stop()


def _customers_on(model: NetworkModel, buses: set[int]) -> set[str]:
    return {c.consumer_number for c in model.customers if c.bus in buses}


def _schedule(svc: PlannedOutageService, **kw: object):  # noqa: ANN202 - a PlannedOutage
    args: dict[str, object] = dict(title="RMU06 cable joint", reason="cable joint repair F2-C07",
                                   origin=PlannedOrigin.ASSET_MANAGEMENT, switches=["F2-RMU06-LBS2"],
                                   earths=["F2-C07"], start_ms=T0 + 48 * HOUR_MS, end_ms=T0 + 52 * HOUR_MS,
                                   operator="planner")
    args.update(kw)
    return svc.schedule(**args)  # type: ignore[arg-type]


def test_affected_customers_match_an_independent_topology_count(model: NetworkModel,
                                                                 svc: PlannedOutageService) -> None:
    tp = TopologyProcessor(model)
    tail = _customers_on(model, set(tp.downstream_buses("F2-RMU06-LBS2")))
    assert len(tail) > 50
    o = _schedule(svc)
    assert o.state is PlannedState.NOTIFIED and o.customer_count == len(tail) and o.feeder == "F2"
    assert set(svc.customers(o.id)) == tail
    # two openings on a radial feeder: everything beyond the first loses supply (no back-feed step is planned)
    beyond = _customers_on(model, set(tp.downstream_buses("F2-RMU03-LBS2")))
    effect = isolation_effect(model, _normal(model), ["F2-RMU03-LBS2", "F2-RMU05-LBS1"])
    assert not effect.problems and {c for c, _ in effect.customers} == beyond and len(beyond) > len(tail)
    assert effect.loads[0] == "F2-RMU04-LOAD" and effect.switches == ("F2-RMU03-LBS2", "F2-RMU05-LBS1")
    # with the ring open at RMU06 already, opening RMU05 cuts more: the customers follow the present positions
    other = isolation_effect(model, _normal(model) & (np.array([s.name != "F2-RMU06-LBS2" for s in model.switches])),
                             ["F2-RMU05-LBS1"])
    assert "F2-RMU05-LOAD" in other.loads and "F2-RMU07-LOAD" not in other.loads  # those are off already


def test_an_isolation_that_does_not_hold_is_refused_by_name(svc: PlannedOutageService) -> None:
    with pytest.raises(PlannedInputError, match="F1-C01.*live"):  # the earthed cable is not isolated
        _schedule(svc, earths=["F1-C01"])
    with pytest.raises(PlannedInputError, match="no element 'NOPE'"):
        _schedule(svc, switches=["NOPE"])
    with pytest.raises(PlannedInputError, match="F1-RMU08-LBS2 is already open"):  # the normally-open point
        _schedule(svc, switches=["F1-RMU08-LBS2"], earths=[])
    with pytest.raises(PlannedInputError, match="before it starts"):
        _schedule(svc, start_ms=T0 + 5 * HOUR_MS, end_ms=T0 + 4 * HOUR_MS)
    with pytest.raises(PlannedInputError, match="already over"):
        _schedule(svc, start_ms=T0 - 5 * HOUR_MS, end_ms=T0 - 4 * HOUR_MS)
    with pytest.raises(PlannedInputError, match="unknown origin 'rumour'"):
        _schedule(svc, origin="rumour")
    with pytest.raises(PlannedInputError, match="no switch to open"):
        _schedule(svc, switches=[])
    assert svc.list() == []


def test_notifications_feed_per_customer_and_since_sequence(svc: PlannedOutageService) -> None:
    o = _schedule(svc)
    customers = svc.customers(o.id)
    first = svc.notifications(0)
    assert [n.consumer_number for n in first] == list(customers)
    assert {(n.outage_id, n.kind, n.start_ms, n.end_ms) for n in first} == {
        (o.id, NotificationKind.SCHEDULED, o.start_ms, o.end_ms)}
    assert first[0].text.startswith(f"PO-{o.id}: planned power interruption from ") and "F2-C07" in first[0].text
    last = first[-1].seq
    assert svc.notifications(last) == []
    page = svc.notifications(0, limit=10)
    assert [n.seq for n in page] == [n.seq for n in first[:10]]

    held = _schedule(svc, title="held back", notify=False)  # stays SCHEDULED, nothing sent
    assert held.state is PlannedState.SCHEDULED and svc.notifications(last) == []
    with pytest.raises(PlannedStateError, match="not notified"):
        svc.start_outage(held.id, DESK)

    moved = svc.reschedule(o.id, T0 + 72 * HOUR_MS, T0 + 75 * HOUR_MS, "planner")
    assert (moved.start_ms, moved.state) == (T0 + 72 * HOUR_MS, PlannedState.NOTIFIED)
    again = svc.notifications(last)
    assert {n.kind for n in again} == {NotificationKind.RESCHEDULED} and len(again) == len(customers)
    assert all(n.start_ms == T0 + 72 * HOUR_MS for n in again) and "moved to" in again[0].text
    last = again[-1].seq

    one = customers[0]
    assert [p.id for p in svc.customer_planned(one)] == [held.id, o.id]  # by start: o was moved later
    assert svc.customer_planned("000000000000") == []
    cancelled = svc.cancel(o.id, "planner", "crew unavailable")
    assert cancelled.state is PlannedState.CANCELLED
    gone = svc.notifications(last)
    assert {n.kind for n in gone} == {NotificationKind.CANCELLED} and len(gone) == len(customers)
    assert "cancelled" in gone[0].text
    assert [p.id for p in svc.customer_planned(one)] == [held.id]
    actions = [a.action for a in svc.audit(o.id)]
    assert actions == ["scheduled", "notified", "rescheduled", "cancelled"]
    assert {a.operator for a in svc.audit(o.id)} == {"planner"}


def test_state_machine_refusals_are_named(svc: PlannedOutageService) -> None:
    o = _schedule(svc)
    with pytest.raises(PlannedStateError, match=f"PO-{o.id} is notified: it has not started"):
        svc.complete_outage(o.id, DESK)
    svc.cancel(o.id, "planner")
    with pytest.raises(PlannedStateError, match=f"PO-{o.id} is cancelled: only a notified outage starts"):
        svc.start_outage(o.id, DESK)
    with pytest.raises(PlannedStateError, match="cancelled: it cannot be cancelled"):
        svc.cancel(o.id, "planner")
    with pytest.raises(PlannedStateError, match="only a scheduled or notified outage can be rescheduled"):
        svc.reschedule(o.id, T0 + HOUR_MS, T0 + 2 * HOUR_MS, "planner")
    with pytest.raises(PlannedStateError, match="only a scheduled outage is notified"):
        svc.notify(o.id, "planner")
    with pytest.raises(PlannedNotFoundError, match="no planned outage 999"):
        svc.get(999)
    ready = _schedule(svc, title="second")
    with pytest.raises(PlannedOutageError, match="no switching service"):  # this service has none attached
        svc.start_outage(ready.id, DESK)
    assert svc.get(ready.id).state is PlannedState.NOTIFIED
    running = svc.store.save(replace(ready, state=PlannedState.STARTING, isolation_order=4, exec_started_ms=T0))
    with pytest.raises(PlannedStateError, match="abort its isolation switching order 4 first"):
        svc.cancel(running.id, "planner")


def test_persistence_over_reopen(model: NetworkModel, tmp_path: Path) -> None:
    path = tmp_path / "planned.sqlite"
    first = _service(model, path)
    o = _schedule(first, origin=PlannedOrigin.FIELD_INTIMATION)
    held = _schedule(first, title="later", notify=False)
    first.notify(held.id, "planner")
    seq = first.notifications(0)[-1].seq
    customers = first.customers(o.id)
    first.stop()
    again = _service(model, path)
    try:
        assert again.get(o.id) == o and again.customers(o.id) == customers
        assert again.get(held.id).state is PlannedState.NOTIFIED
        assert [x.id for x in again.list(active_only=True)] == [o.id, held.id]
        assert again.notifications(0)[-1].seq == seq and len(again.notifications(0)) == 2 * len(customers)
        assert [a.action for a in again.audit(held.id)] == ["scheduled", "notified"]
        assert again.get(o.id).origin is PlannedOrigin.FIELD_INTIMATION
    finally:
        again.stop()


def test_covering_names_the_executing_outage_of_a_switch(model: NetworkModel, svc: PlannedOutageService) -> None:
    o = _schedule(svc, switches=["F2-RMU03-LBS2", "F2-RMU05-LBS1"], earths=[])
    assert svc.covering("F2-RMU03-LBS2", T0) is None  # notified only: no switching yet
    # the state Start leaves behind (the switching itself is tested live in the gRPC integration test)
    started = svc.store.save(replace(o, state=PlannedState.STARTING, exec_started_ms=T0 + HOUR_MS, isolation_order=1))
    mrid = next(s.mrid for s in model.switches if s.name == "F2-RMU05-LBS1")
    assert svc.covering("F2-RMU03-LBS2", T0 + HOUR_MS + 500) == started
    assert svc.covering(mrid, T0 + HOUR_MS + 900) == started
    assert svc.covering("F2-RMU03-LBS2", T0) is None  # an opening long before the switching began
    assert svc.covering("F2-RMU06-LBS2", T0 + HOUR_MS + 500) is None  # not one of its switches
    done = svc.store.save(replace(started, state=PlannedState.COMPLETED, completed_ms=T0 + 3 * HOUR_MS))
    assert svc.covering("F2-RMU03-LBS2", T0 + 2 * HOUR_MS) == done  # a late report of an opening during the work
    assert svc.covering("F2-RMU03-LBS2", T0 + 4 * HOUR_MS) is None


def test_reschedule_follows_the_present_network(model: NetworkModel, tmp_path: Path) -> None:
    closed = _normal(model)
    svc = PlannedOutageService(PlannedStore(tmp_path / "planned.sqlite"), lambda: (model, closed, "now"),
                               clock=lambda: T0)
    try:
        o = _schedule(svc, earths=[])
        before = set(svc.customers(o.id))
        seq = svc.notifications(0)[-1].seq
        # meanwhile the RMU08 end was switched away (open between RMU07 and RMU08): those customers are off already
        closed[[i for i, s in enumerate(model.switches) if s.name == "F2-RMU07-LBS2"]] = False
        moved = svc.reschedule(o.id, T0 + 80 * HOUR_MS, T0 + 82 * HOUR_MS, "planner")
        after = set(svc.customers(o.id))
        assert after < before and moved.customer_count == len(after) and moved.basis == "now"
        notes = svc.notifications(seq)
        assert {n.consumer_number for n in notes if n.kind is NotificationKind.RESCHEDULED} == after
        assert {n.consumer_number for n in notes if n.kind is NotificationKind.CANCELLED} == before - after
    finally:
        svc.stop()
