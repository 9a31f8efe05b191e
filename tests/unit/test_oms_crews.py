"""Crews and work assignment (oms/crews.py, oms/assignment.py)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from models.cim import load_cim
from models.sample_network import build_sample_network
from oms.assignment import haversine_km, solve_assignment, total_objective
from oms.connectivity import build_connectivity
from oms.crews import (
    CoordinateSystem,
    Crew,
    CrewBoard,
    CrewError,
    CrewSkill,
    CrewStatus,
    InvalidTransitionError,
    OutageStage,
    PriorityWeights,
    RepairTimes,
    UnknownCrewError,
    UnknownWorkError,
    make_work_item,
    required_skill,
    work_item_for_device,
)
from oms.errors import OmsError
from tests.support import IEEE123, requires_reference_feeders

T0 = 1_790_000_000_000  # epoch ms
SHIFT = (T0 - 3_600_000, T0 + 12 * 3_600_000)
ALL = frozenset(CrewSkill)
BASE = (73.85, 18.53)  # lon, lat


def _at(d_lon_km: float, d_lat_km: float = 0.0) -> tuple[float, float]:
    """A point some km east/north of BASE (small offsets: flat-earth is good enough to place test points)."""
    return (BASE[0] + d_lon_km / (111.32 * np.cos(np.radians(BASE[1]))), BASE[1] + d_lat_km / 110.57)


def _crew(cid: str, loc: tuple[float, float], skills=ALL, **kw) -> Crew:
    return Crew(cid, f"Crew {cid}", loc, SHIFT[0], SHIFT[1], frozenset(skills), ("van",), **kw)


def _item(oid: str, loc: tuple[float, float], *, customers: int = 10, skill=CrewSkill.OVERHEAD, kind: str = "fuse",
          critical: int = 0, hazard: bool = False):
    return make_work_item(oid, device=f"dev-{oid}", device_kind=kind, location=loc, skill=skill,
                          customers_affected=customers, critical_customers=critical, hazard=hazard, created_ms=T0)


def _brute_force(travel_h, feasible, priority, hours_per_point):
    """Best (most served, then least objective) over every injective crew -> item map."""
    n_crews, n_items = travel_h.shape
    best = None
    options = list(range(n_items)) + [None] * n_crews  # None: crew idle
    for perm in itertools.permutations(options, n_crews):
        pairs = tuple((i, j) for i, j in enumerate(perm) if j is not None)
        if any(not feasible[i, j] for i, j in pairs):
            continue
        key = (-len(pairs), round(total_objective(travel_h, priority, pairs, hours_per_point=hours_per_point), 9))
        if best is None or key < best:
            best = key
    return best


# --------------------------------------------------------------------------------------------------- the solver

def test_worked_three_crews_four_outages_lowest_priority_waits() -> None:
    travel_h = np.array([[0.20, 0.50, 1.00, 0.30],
                         [0.60, 0.10, 0.40, 0.90],
                         [0.80, 0.70, 0.20, 0.05]])
    priority = np.array([5.0, 4.0, 3.0, 1.0])
    feasible = np.ones_like(travel_h, dtype=bool)
    sol = solve_assignment(travel_h, feasible, priority, hours_per_point=1.0)
    # Crew 2 is 3 minutes from outage 3, but it has the lowest priority: it waits.
    assert sol.pairs == ((0, 0), (1, 1), (2, 2))
    assert sol.waiting == (3,)
    assert sol.objective == pytest.approx(0.5 - 12.0)
    assert _brute_force(travel_h, feasible, priority, 1.0) == (-3, round(sol.objective, 9))
    # With priority worth almost nothing, travel decides: crew 2 takes the nearby outage 3 and outage 2 waits.
    cheap = solve_assignment(travel_h, feasible, priority, hours_per_point=0.01)
    assert cheap.pairs == ((0, 0), (1, 1), (2, 3))
    assert _brute_force(travel_h, feasible, priority, 0.01)[1] == round(cheap.objective, 9)


@pytest.mark.parametrize("seed", range(60))
def test_solver_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_crews, n_items = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    travel_h = rng.uniform(0.0, 3.0, (n_crews, n_items))
    feasible = rng.random((n_crews, n_items)) < 0.7
    priority = rng.uniform(0.0, 5.0, n_items)
    hpp = float(rng.choice([0.0, 0.1, 1.0]))
    sol = solve_assignment(travel_h, feasible, priority, hours_per_point=hpp)
    assert all(feasible[i, j] for i, j in sol.pairs)
    assert len({j for _i, j in sol.pairs}) == len(sol.pairs)
    assert (-len(sol.pairs), round(sol.objective, 9)) == _brute_force(travel_h, feasible, priority, hpp)


def test_infeasible_item_does_not_steal_a_crew() -> None:
    travel_h = np.array([[1.0, 1.0], [1.0, 1.0]])
    feasible = np.array([[True, False], [True, False]])  # nobody can do item 1
    sol = solve_assignment(travel_h, feasible, np.array([1.0, 50.0]))
    assert sol.pairs in (((0, 0),), ((1, 0),))
    assert sol.waiting == (1,)


def test_solver_rejects_bad_shapes() -> None:
    with pytest.raises(OmsError, match="shapes"):
        solve_assignment(np.zeros((2, 3)), np.ones((2, 2), dtype=bool), np.zeros(3))


def test_haversine_one_degree_of_latitude() -> None:
    assert float(haversine_km(0.0, 0.0, 0.0, 1.0)) == pytest.approx(111.19, abs=0.05)


# ------------------------------------------------------------------------------------------ work from the model

def test_skills_and_locations_from_the_sample_network() -> None:
    model = build_sample_network()
    expected = {"F3-REC1": CrewSkill.OVERHEAD, "F3-SEC1": CrewSkill.OVERHEAD, "F3-SPUR-DT": CrewSkill.OVERHEAD,
                "F3-CB": CrewSkill.SUBSTATION, "SS-TR1": CrewSkill.SUBSTATION, "F1-RMU01-TEE": CrewSkill.UNDERGROUND,
                "F3-RMU02-TEE": CrewSkill.UNDERGROUND, "F1-RMU01-DT": CrewSkill.UNDERGROUND}
    assert {d: required_skill(model, d) for d in expected} == expected
    item = work_item_for_device(model, 12, "F3-REC1", "recloser", customers_affected=40, critical_customers=1,
                                hazard=True)
    rec = next(s for s in model.switches if s.name == "F3-REC1")
    assert item.location == (model.buses[rec.from_bus].x, model.buses[rec.from_bus].y)
    assert item.outage_id == "12" and item.skill is CrewSkill.OVERHEAD
    assert item.priority == pytest.approx(1 + 10 * 1 + 0.1 * 40 + 100)
    with pytest.raises(CrewError, match="'NO-SUCH'"):
        work_item_for_device(model, 1, "NO-SUCH", "fuse", customers_affected=1)


@requires_reference_feeders()
def test_ieee123_plane_coordinates(tmp_path) -> None:
    """IEEE 123's coordinates are not (lon, lat): a PLANAR board routes crews over them."""
    model = load_cim(IEEE123)
    conn = build_connectivity(model)
    devices = [d for d in conn.devices if d.customers > 0 and d.parent >= 0][:3]
    items = [work_item_for_device(model, k, d.name, d.kind, customers_affected=d.customers)
             for k, d in enumerate(devices)]
    assert all(i.skill is CrewSkill.OVERHEAD for i in items)  # IEEE 123 is an overhead feeder
    b = CrewBoard(tmp_path / "ieee.db", coordinates=CoordinateSystem.PLANAR, planar_unit_m=0.3048)
    try:
        b.add_crew(_crew("A", items[0].location, {CrewSkill.OVERHEAD}))
        for it in items:
            b.add_work(it)
        (a,) = b.optimise(T0)
        assert a.crew_id == "A" and a.travel_s == pytest.approx(0.0)  # standing at the first device
    finally:
        b.close()


# ------------------------------------------------------------------------------------------------- the board

@pytest.fixture
def board(tmp_path):
    b = CrewBoard(tmp_path / "crews.db", speed_kmh=30.0)
    yield b
    b.close()


def test_skills_respected(board: CrewBoard) -> None:
    board.add_crew(_crew("OH", _at(0.5), {CrewSkill.OVERHEAD}))
    board.add_crew(_crew("UG", _at(20.0), {CrewSkill.UNDERGROUND}))
    board.add_work(_item("cable", _at(0.0), skill=CrewSkill.UNDERGROUND))
    board.add_work(_item("sub", _at(0.0), skill=CrewSkill.SUBSTATION, customers=900))
    out = board.optimise(T0)
    assert [(a.outage_id, a.crew_id) for a in out] == [("cable", "UG")]
    assert board.crew("OH").status is CrewStatus.AVAILABLE
    assert [i.outage_id for i in board.waiting()] == ["sub"]
    assert board.etr_ms("sub") == -1 and board.stage("sub") is OutageStage.WAITING


def test_etr_follows_the_crew(board: CrewBoard) -> None:
    stages = []
    board.on_stage = lambda oid, stage, t: stages.append((oid, stage, t))
    board.add_crew(_crew("A", _at(0.0)))
    board.add_work(_item("o1", _at(15.0), kind="recloser"))  # 15 km at 30 km/h: 30 min; recloser repair 90 min
    (a,) = board.optimise(T0)
    assert a.stage is OutageStage.CREW_ASSIGNED and board.crew("A").status is CrewStatus.ASSIGNED
    assert a.travel_s == pytest.approx(1800.0, rel=0.01)
    assert a.etr_ms == T0 + round((a.travel_s + 90 * 60) * 1000)
    # It leaves 10 min later from 5 km closer: ETR = report + 20 min travel + 90 min repair.
    t1 = T0 + 600_000
    assert board.report_status("A", "en_route", t1, location=_at(5.0)) is OutageStage.EN_ROUTE
    assert board.etr_ms("o1") == pytest.approx(t1 + (1200 + 5400) * 1000, abs=15_000)
    t2 = t1 + 1_500_000  # arrives 5 min late: ETR = arrival + repair
    assert board.report_status("A", CrewStatus.ON_SITE, t2) is OutageStage.ON_SITE
    assert board.etr_ms("o1") == t2 + 5_400_000
    assert board.crew("A").location == pytest.approx(_at(15.0))
    t3 = t2 + 3_000_000
    assert board.report_status("A", "available", t3) is OutageStage.RESTORED
    assert board.etr_ms("o1") == t3 and board.stage("o1") is OutageStage.RESTORED
    assert board.crew("A").status is CrewStatus.AVAILABLE and board.crew("A").outage_id == ""
    assert board.assignments() == [] and board.assignments(include_restored=True)[0].stage is OutageStage.RESTORED
    assert [s for _o, s, _t in stages] == [OutageStage.CREW_ASSIGNED, OutageStage.EN_ROUTE, OutageStage.ON_SITE,
                                           OutageStage.RESTORED]
    board.optimise(t3 + 1)  # a restored outage is not handed out again
    assert board.crew("A").status is CrewStatus.AVAILABLE


def test_reoptimisation_keeps_on_site_and_en_route_crews(board: CrewBoard) -> None:
    board.add_crew(_crew("S", _at(0.0)))
    board.add_crew(_crew("R", _at(10.0)))
    board.add_work(_item("small1", _at(0.5), customers=10))  # priority 2
    board.add_work(_item("small2", _at(10.5), customers=10))
    assert {a.crew_id: a.outage_id for a in board.optimise(T0)} == {"S": "small1", "R": "small2"}
    board.report_status("S", "en_route", T0 + 60_000)
    board.report_status("S", "on_site", T0 + 120_000)
    board.report_status("R", "en_route", T0 + 60_000)
    # Next to both crews, not twice as important as R's outage (priority 3 < 2 x 2): nobody moves.
    board.add_work(_item("mid", _at(10.0), customers=20))
    assert {a.crew_id: a.outage_id for a in board.optimise(T0 + 180_000)} == {"S": "small1", "R": "small2"}
    assert [i.outage_id for i in board.waiting()] == ["mid"]
    # A hazard next to S: S is on site and stays; R (en route) is diverted, its outage waits again.
    board.add_work(_item("hazard", _at(0.2), customers=5, hazard=True))
    out = {a.crew_id: a.outage_id for a in board.optimise(T0 + 240_000)}
    assert out == {"S": "small1", "R": "hazard"}
    assert board.crew("S").status is CrewStatus.ON_SITE
    assert board.crew("R").status is CrewStatus.ASSIGNED and board.stage("small2") is OutageStage.WAITING
    # A new crew 1 km nearer the hazard: R has not left yet (assigned), so the pair is re-planned as a whole:
    # N (8.8 km) takes the hazard and R (0 km) the mid outage, 8.8 km in all instead of 9.8 + 1.
    board.add_crew(_crew("N", _at(9.0)))
    out = {a.crew_id: a.outage_id for a in board.optimise(T0 + 300_000)}
    assert out == {"S": "small1", "N": "hazard", "R": "mid"}
    assert [i.outage_id for i in board.waiting()] == ["small2"]


def test_more_outages_than_crews_and_shift(board: CrewBoard) -> None:
    board.add_crew(_crew("A", _at(0.0)))
    board.add_crew(Crew("Z", "late", _at(0.0), T0 + 3_600_000, T0 + 7_200_000, ALL))
    board.add_work(_item("low", _at(0.1), customers=1))
    board.add_work(_item("high", _at(8.0), customers=300))
    assert [(a.crew_id, a.outage_id) for a in board.optimise(T0)] == [("A", "high")]  # Z not on shift yet
    assert [(a.crew_id, a.outage_id) for a in board.optimise(T0 + 3_700_000)] == [("A", "high"), ("Z", "low")]


def test_persistence_across_reopen(tmp_path) -> None:
    path = tmp_path / "board.db"
    b = CrewBoard(path)
    b.add_crew(_crew("A", _at(0.0), {CrewSkill.OVERHEAD, CrewSkill.METER}))
    b.add_crew(_crew("B", _at(3.0)))
    b.add_work(_item("o1", _at(1.0)))
    b.add_work(_item("o2", _at(4.0), kind="meter", skill=CrewSkill.METER))
    b.add_work(_item("o3", _at(9.0), skill=CrewSkill.SUBSTATION))
    b.optimise(T0)
    b.report_status("A", "en_route", T0 + 1000)
    crews, work, assigned = b.crews(), b.waiting(), b.assignments()
    etr = {o: b.etr_ms(o) for o in ("o1", "o2", "o3")}
    b.close()
    again = CrewBoard(path)
    try:
        assert again.crews() == crews and again.waiting() == work and again.assignments() == assigned
        assert {o: again.etr_ms(o) for o in ("o1", "o2", "o3")} == etr
        assert again.report_status("A", "on_site", T0 + 2000) is OutageStage.ON_SITE
    finally:
        again.close()


def test_bad_input_errors(board: CrewBoard) -> None:
    board.add_crew(_crew("A", _at(0.0)))
    with pytest.raises(UnknownCrewError, match="'GHOST'"):
        board.report_status("GHOST", "en_route", T0)
    with pytest.raises(InvalidTransitionError, match="'A'.*available to on_site"):
        board.report_status("A", "on_site", T0)
    with pytest.raises(InvalidTransitionError, match="available to assigned"):
        board.report_status("A", "assigned", T0)
    with pytest.raises(InvalidTransitionError, match="unknown status 'lunch'"):
        board.report_status("A", "lunch", T0)
    with pytest.raises(CrewError, match="already exists"):
        board.add_crew(_crew("A", _at(1.0)))
    with pytest.raises(UnknownWorkError, match="'nope'"):
        board.etr_ms("nope")
    with pytest.raises(CrewError, match="shift ends"):
        Crew("X", "x", _at(0.0), T0, T0, ALL)
    with pytest.raises(CrewError, match="'X'.*outside"):
        board.add_crew(Crew("X", "x", (200.0, 10.0), *SHIFT, ALL))
    with pytest.raises(CrewError, match="not finite"):
        Crew("X", "x", (float("nan"), 10.0), *SHIFT, ALL)
    with pytest.raises(CrewError, match="'X'.*needs an outage"):
        Crew("X", "x", _at(0.0), *SHIFT, ALL, status=CrewStatus.ON_SITE)
    with pytest.raises(CrewError, match="'X'.*'welding'"):
        Crew("X", "x", _at(0.0), *SHIFT, frozenset({"welding"}))
    with pytest.raises(CrewError, match="critical customers"):
        _item("o", _at(0.0), customers=1, critical=2)
    with pytest.raises(CrewError, match="unknown device kind 'tower'"):
        _item("o", _at(0.0), kind="tower")
    with pytest.raises(CrewError, match="no entry for"):
        RepairTimes({"fuse": 10.0})
    with pytest.raises(CrewError, match="per_customer"):
        PriorityWeights(per_customer=-1.0)
    board.add_work(_item("o1", _at(1.0)))
    with pytest.raises(CrewError, match="already has a work item"):
        board.add_work(_item("o1", _at(1.0)))
    board.optimise(T0)
    with pytest.raises(InvalidTransitionError, match="before the present stage"):
        board.report_status("A", "en_route", T0 - 1)
    with pytest.raises(InvalidTransitionError, match="assigned to off_shift"):
        board.report_status("A", "off_shift", T0)


def test_remove_work_frees_the_crew(board: CrewBoard) -> None:
    board.add_crew(_crew("A", _at(0.0)))
    board.add_work(_item("o1", _at(1.0)))
    board.optimise(T0)
    board.remove_work("o1", T0 + 1000)  # restored by SCADA before the crew left
    assert board.crew("A").status is CrewStatus.AVAILABLE and board.assignments() == []
    assert board.report_status("A", "off_shift", T0 + 2000) is None
    assert board.report_status("A", "available", T0 + 3000) is None
    with pytest.raises(UnknownWorkError):
        board.remove_work("o1", T0)


def test_concurrent_use(board: CrewBoard) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for n in range(10):
                board.add_crew(_crew(f"C{k}-{n}", _at(k, n)))
                board.add_work(_item(f"O{k}-{n}", _at(n, k)))
                board.optimise(T0 + n)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20.0)
    assert not errors and not any(t.is_alive() for t in threads)
    board.optimise(T0 + 100)
    assert len(board.assignments()) == 40 and board.waiting() == []


def test_update_crew_and_shift_end(board: CrewBoard) -> None:
    stages = []
    board.on_stage = lambda oid, stage, t: stages.append((oid, stage))
    board.add_crew(Crew("A", "a", _at(0.0), T0 - 1000, T0 + 60_000, {CrewSkill.OVERHEAD}))
    board.add_work(_item("ug", _at(1.0), skill=CrewSkill.UNDERGROUND))
    assert board.optimise(T0) == []
    board.update_crew("A", skills={"overhead", "underground"}, equipment=("cable jointing kit",))
    assert [a.crew_id for a in board.optimise(T0)] == ["A"]
    assert board.crew("A").equipment == ("cable jointing kit",)
    # The shift ends before the crew left: its outage goes back to waiting.
    assert board.optimise(T0 + 60_000) == []
    assert board.crew("A").status is CrewStatus.AVAILABLE and board.stage("ug") is OutageStage.WAITING
    assert stages == [("ug", OutageStage.CREW_ASSIGNED), ("ug", OutageStage.WAITING)]
    with pytest.raises(UnknownCrewError):
        board.update_crew("B", name="b")
    with pytest.raises(CrewError, match="outside"):
        board.update_crew("A", location=(0.0, 95.0))
