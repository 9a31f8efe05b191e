"""Modbus scan planner: groups and periods, coalescing within the protocol limits, 32-bit points, gaps."""

from __future__ import annotations

import itertools
import random

import pytest

from frontend_protocols.modbus.register_map import (
    ModbusPlanError,
    ScanGroupKind,
    Span,
    coalesce,
    plan_scan,
    scan_periods,
)
from models.config import Protocol, RtuConfig
from models.points import PointDef, PointKind, PointSource
from models.protocols.modbus import MAX_READ_BITS, MAX_READ_REGISTERS, DataType, Options, RegisterType, Table

_ids = itertools.count()


def pt(type_id: str, address: int, kind: PointKind = PointKind.ANALOG) -> PointDef:
    n = next(_ids)
    return PointDef(id=n, name=f"P{n}", kind=kind, source=PointSource("modbus", "M", 1, address, type_id))


def spans(*items: tuple[str, int]) -> list[Span]:
    out = []
    for type_id, address in items:
        rt = RegisterType.parse(type_id)
        out.append(Span(address, rt.width, rt.dtype, pt(type_id, address)))
    return out


def rtu(**opts: object) -> RtuConfig:
    frtu = bool(opts.pop("frtu", False))
    return RtuConfig(name="M", protocol=Protocol.MODBUS, common_address=1, addresses=("127.0.0.1:1502",),
                     frtu=frtu, modbus=Options(**opts))  # type: ignore[arg-type]


def covered(reqs: list, sp: list[Span]) -> None:
    """Every span lies wholly inside exactly one read, at the offset the read says."""
    for s in sp:
        hits = [(r, slot) for r in reqs for slot in r.points if slot.point is s.point]
        assert len(hits) == 1, s
        r, slot = hits[0]
        assert r.start + slot.offset == s.start
        assert r.start <= s.start and s.end <= r.start + r.count


# ------------------------------------------------------------------------------------------------ periods


def test_periods_from_budgets_and_options() -> None:
    assert scan_periods(rtu()) == {ScanGroupKind.DIGITAL: 2.0, ScanGroupKind.ANALOG: 2.5}
    assert scan_periods(rtu(frtu=True)) == {ScanGroupKind.DIGITAL: 3.0, ScanGroupKind.ANALOG: 5.0}
    assert scan_periods(rtu(digital_scan_s=0.5, analog_scan_s=7.0)) == {ScanGroupKind.DIGITAL: 0.5,
                                                                         ScanGroupKind.ANALOG: 7.0}
    for r in (rtu(), rtu(frtu=True)):
        p = scan_periods(r)
        assert p[ScanGroupKind.DIGITAL] <= (6.0 if r.frtu else 4.0)
        assert p[ScanGroupKind.ANALOG] <= (10.0 if r.frtu else 5.0)


def test_plan_groups_points_by_kind_and_skips_commands() -> None:
    pts = [pt("discrete_input", 0, PointKind.SINGLE), pt("input_uint16", 0, PointKind.DOUBLE),
           pt("input_float32", 1000), pt("holding_uint32", 10, PointKind.COUNTER),
           pt("holding_float32", 20, PointKind.SETPOINT), pt("", 0, PointKind.COMMAND)]
    plan = plan_scan(rtu(), pts)
    kinds = {g.kind: g for g in plan.groups}
    digital = {s.point.id for r in kinds[ScanGroupKind.DIGITAL].requests for s in r.points}
    analog = {s.point.id for r in kinds[ScanGroupKind.ANALOG].requests for s in r.points}
    assert digital == {pts[0].id, pts[1].id}
    assert analog == {pts[2].id, pts[3].id, pts[4].id}
    tables = sorted((r.table.value, r.start, r.count) for r in kinds[ScanGroupKind.ANALOG].requests)
    # holding 10..11 and 20..21 are 8 registers apart: read through (gap <= 10)
    assert tables == [("holding", 10, 12), ("input", 1000, 2)]
    assert plan.requests_per_s == pytest.approx(2 / 2.0 + 2 / 2.5)


def test_empty_groups_are_left_out() -> None:
    plan = plan_scan(rtu(), [pt("input_int16", 3)])
    assert [g.kind for g in plan.groups] == [ScanGroupKind.ANALOG]
    assert plan_scan(rtu(), []).groups == ()


# ------------------------------------------------------------------------------------------------ coalescing


def test_contiguous_registers_fill_reads_up_to_125() -> None:
    sp = spans(*[("holding_uint16", a) for a in range(300)])
    reqs = coalesce(Table.HOLDING, sp, 10)
    assert [(r.start, r.count) for r in reqs] == [(0, 125), (125, 125), (250, 50)]
    covered(reqs, sp)


def test_32_bit_point_never_straddles_the_limit() -> None:
    # 62 float32 from 0 fill 124 registers; the 63rd (124..125) would end at 126 > 125: it starts the next read
    sp = spans(*[("input_float32", 2 * k) for k in range(64)])
    reqs = coalesce(Table.INPUT, sp, 10)
    assert [(r.start, r.count) for r in reqs] == [(0, 124), (124, 4)]
    covered(reqs, sp)
    # an odd start: 1 x uint16 then float32s; the boundary still falls between points
    sp = spans(("input_uint16", 0), *[("input_float32", 1 + 2 * k) for k in range(63)])
    reqs = coalesce(Table.INPUT, sp, 10)
    assert all(r.count <= MAX_READ_REGISTERS for r in reqs)
    assert [(r.start, r.count) for r in reqs] == [(0, 125), (125, 2)]
    covered(reqs, sp)


def test_32_bit_point_at_the_end_of_the_address_space() -> None:
    plan = plan_scan(rtu(), [pt("holding_float32", 65534)])
    assert [(r.start, r.count) for r in plan.requests] == [(65534, 2)]
    with pytest.raises(ModbusPlanError, match="runs past the last address 65535"):
        plan_scan(rtu(), [pt("holding_float32", 65535)])


def test_gaps_are_read_through_only_when_short() -> None:
    sp = spans(("holding_uint16", 0), ("holding_uint16", 11), ("holding_uint16", 23))
    # 0 -> 11: gap of 10 registers (1..10) read through; 11 -> 23: gap of 11 starts a new read
    reqs = coalesce(Table.HOLDING, sp, 10)
    assert [(r.start, r.count) for r in reqs] == [(0, 12), (23, 1)]
    assert [(r.start, r.count) for r in coalesce(Table.HOLDING, sp, 0)] == [(0, 1), (11, 1), (23, 1)]
    assert [(r.start, r.count) for r in coalesce(Table.HOLDING, sp, 11)] == [(0, 24)]
    covered(coalesce(Table.HOLDING, sp, 11), sp)


def test_gap_never_pushes_a_read_past_the_limit() -> None:
    sp = spans(("holding_uint16", 0), ("holding_uint16", 120), ("holding_float32", 124))
    reqs = coalesce(Table.HOLDING, sp, 125)
    assert [(r.start, r.count) for r in reqs] == [(0, 121), (124, 2)]


def test_bits_up_to_2000_and_bit_gaps() -> None:
    sp = spans(*[("coil", a) for a in range(4500)])
    reqs = coalesce(Table.COIL, sp, 10)
    assert [(r.start, r.count) for r in reqs] == [(0, 2000), (2000, 2000), (4000, 500)]
    # bit gaps: 16 bits per register of allowance -> 160 bits
    sp = spans(("discrete_input", 0), ("discrete_input", 161), ("discrete_input", 323))
    assert [(r.start, r.count) for r in coalesce(Table.DISCRETE_INPUT, sp, 10)] == [(0, 162), (323, 1)]


def test_tables_are_never_mixed() -> None:
    pts = [pt("holding_uint16", 0), pt("input_uint16", 1), pt("holding_uint16", 2), pt("input_uint16", 3)]
    reqs = plan_scan(rtu(), pts).requests
    assert sorted((r.table.value, r.start, r.count) for r in reqs) == [("holding", 0, 3), ("input", 1, 3)]


@pytest.mark.parametrize("seed", range(20))
def test_random_maps_are_legal_complete_and_minimal(seed: int) -> None:
    rng = random.Random(seed)
    types = ["holding_uint16", "holding_int16", "holding_int32", "holding_uint32", "holding_float32"]
    used: set[int] = set()
    items = []
    for _ in range(rng.randint(1, 400)):
        t = rng.choice(types)
        a = rng.randrange(0, 3000)
        w = RegisterType.parse(t).width
        if used & set(range(a, a + w)):
            continue
        used |= set(range(a, a + w))
        items.append((t, a))
    sp = spans(*items)
    gap = rng.choice([0, 3, 10, 40])
    reqs = coalesce(Table.HOLDING, sp, gap)
    covered(reqs, sp)
    for r in reqs:
        assert 1 <= r.count <= MAX_READ_REGISTERS
        cells = sorted((s.offset, s.offset + s.width) for s in r.points)
        assert cells[0][0] == 0 and cells[-1][1] == r.count  # no read starts or ends in unused registers
        for (_, e), (s, _) in itertools.pairwise(cells):
            assert s - e <= gap  # no gap longer than allowed
    # minimal: a brute-force lower bound by the same greedy rule from the right gives the same count
    ordered = sorted(sp, key=lambda s: s.start)
    n, i = 0, len(ordered) - 1
    while i >= 0:
        end, j = ordered[i].end, i
        while (j - 1 >= 0 and ordered[j].start - ordered[j - 1].end <= gap
               and end - ordered[j - 1].start <= MAX_READ_REGISTERS):
            j -= 1
        n, i = n + 1, j - 1
    assert len(reqs) == n


def test_bit_limit_constant() -> None:
    assert MAX_READ_BITS == 2000 and MAX_READ_REGISTERS == 125
    assert DataType.FLOAT32.registers == 2 and DataType.UINT16.registers == 1
