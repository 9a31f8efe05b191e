import math

import numpy as np
import pytest

from iccp.sim import (
    DEFAULT_TIES,
    BreakerResult,
    SimPointType,
    TieSpec,
    TransmissionConfig,
    TransmissionSimError,
    TransmissionSystem,
    ties_from_network,
)
from models.points import DoubleState, Quality

T0 = 1_790_000_000_000  # 2026-09-21T12:53:20Z, 18:23 in Pune
HOUR_MS = 3_600_000


def _local_midnight(t_ms: int, offset_min: int = 330) -> int:
    day = 86_400_000
    return (t_ms + offset_min * 60_000) // day * day - offset_min * 60_000


def test_point_catalogue_uses_tase2_names():
    sim = TransmissionSystem(seed=0, start_ms=T0)
    names = [p.name for p in sim.points]
    assert names == ["FREQ_SYS",
                     "TIE1_MW", "TIE1_MVAR", "BUS_T1_KV", "CB_T1_STATE", "MWH_SENT_T1", "MWH_RECV_T1",
                     "TIE2_MW", "TIE2_MVAR", "BUS_T2_KV", "CB_T2_STATE", "MWH_SENT_T2", "MWH_RECV_T2"]
    assert all(len(n) <= 32 and n.replace("_", "").isalnum() for n in names)
    types = {p.name: p.type for p in sim.points}
    assert types["CB_T1_STATE"] is SimPointType.STATE and types["TIE2_MW"] is SimPointType.REAL
    assert [p.name for p in sim.points if p.commandable] == ["CB_T1_STATE", "CB_T2_STATE"]
    snap = sim.snapshot()
    assert [v.name for v in snap] == names
    assert all(v.time_ms == T0 and v.quality is Quality.GOOD for v in snap)
    assert sim.value("CB_T1_STATE").value == DoubleState.ON


def test_default_ties_match_the_sample_network():
    from models.sample_network import build_sample_network

    ties = ties_from_network(build_sample_network())
    assert [(t.number, t.source, t.nominal_kv) for t in ties] == [(1, "SS-GRID1", 33.0), (2, "SS-GRID2", 33.0)]
    for got, default in zip(ties, DEFAULT_TIES, strict=True):
        assert got.source == default.source
        assert got.peak_mw == pytest.approx(default.peak_mw, rel=0.01)


def _run(seed: int, steps: int, dt_s: float = 1.0, config: TransmissionConfig | None = None):
    sim = TransmissionSystem(config, seed=seed, start_ms=T0)
    return [sim.step(dt_s) for _ in range(steps)], sim.snapshot()


def test_same_seed_same_series_other_seed_differs():
    a, snap_a = _run(7, 600)
    b, snap_b = _run(7, 600)
    c, snap_c = _run(8, 600)
    assert a == b and snap_a == snap_b
    assert snap_a != snap_c
    assert sum(len(x) for x in a) > 600  # something is reported by exception every step


def test_changes_are_exactly_the_difference_between_snapshots():
    sim = TransmissionSystem(seed=3, start_ms=T0)
    state = {v.name: v for v in sim.snapshot()}
    operated_ms = -1
    for k in range(300):
        if k == 100:
            operated_ms = sim.now_ms
            sim.operate_breaker("CB_T2_STATE", close=False)
        changes = sim.step(2.0)
        assert len({v.name for v in changes}) == len(changes)
        for v in changes:
            # a breaker operated between steps and its flows carry the time of the operation, the rest the step time
            at_operation = k == 100 and v.name in ("CB_T2_STATE", "TIE2_MW", "TIE2_MVAR")
            assert v.time_ms == (operated_ms if at_operation else sim.now_ms)
            state[v.name] = v
        assert tuple(state[p.name] for p in sim.points) == sim.snapshot()
    # the default deadbands suppress some analog reports
    cfg = sim.config
    assert cfg.freq_deadband_hz > 0 and cfg.flow_deadband_mw > 0


def test_frequency_stays_realistic_and_within_limits():
    cfg = TransmissionConfig(imbalance_rate_per_h=30.0, imbalance_max_hz=0.4, f_min_hz=49.8, f_max_hz=50.2,
                             freq_deadband_hz=0.0)
    sim = TransmissionSystem(cfg, seed=11, start_ms=T0)
    f = np.array([(sim.step(2.0), sim.value("FREQ_SYS").value)[1] for _ in range(5400)])  # 3 h
    assert f.min() >= 49.8 and f.max() <= 50.2
    assert (f == 49.8).any() or (f == 50.2).any()  # the stress reaches a limit
    calm = TransmissionSystem(seed=11, start_ms=T0)
    g = np.array([(calm.step(2.0), calm.value("FREQ_SYS").value)[1] for _ in range(5400)])
    assert abs(g.mean() - 50.0) < 0.05  # governor + AGC bring it back to nominal
    assert 0.003 < g.std() < 0.1
    assert np.abs(np.diff(g)).max() < 0.2  # a random walk, not white noise


def test_load_curve_has_evening_peak_and_night_valley():
    cfg = TransmissionConfig(flow_deadband_mw=0.0, trip_rate_per_h=0.0)
    sim = TransmissionSystem(cfg, seed=5, start_ms=_local_midnight(T0))
    mw = np.array([(sim.step(60.0), sim.value("TIE1_MW").value)[1] for _ in range(24 * 60)])
    hourly = mw.reshape(24, 60).mean(axis=1)  # hour k holds local hour k (steps end at k:01 .. k+1:00)
    assert hourly.argmax() in (19, 20) and hourly.argmin() in (2, 3, 4)
    peak = DEFAULT_TIES[0].peak_mw
    assert 0.9 * peak < hourly.max() < 1.15 * peak
    assert 0.45 * peak < hourly.min() < 0.65 * peak
    mvar = sim.value("TIE1_MVAR").value
    assert 0.2 < mvar / sim.value("TIE1_MW").value < 0.7  # lagging power factor about 0.95 plus transformer var


def _positive_negative(p0: float, p1: float, dt_h: float) -> tuple[float, float]:
    """Exact positive and negative energy of a linear ramp p0 -> p1 (written independently of the simulator)."""
    if p0 >= 0 and p1 >= 0:
        return (p0 + p1) / 2 * dt_h, 0.0
    if p0 <= 0 and p1 <= 0:
        return 0.0, -(p0 + p1) / 2 * dt_h
    tz = abs(p0) / (abs(p0) + abs(p1)) * dt_h
    a, b = abs(p0) * tz / 2, abs(p1) * (dt_h - tz) / 2
    return (a, b) if p0 > 0 else (b, a)


def test_counters_monotonic_roll_over_and_match_integrated_flows():
    modulus = 100.0
    ties = (TieSpec(1, "SS-GRID1", 7.8, der_peak_mw=12.0, initial_sent_mwh=95.0),  # reverse flow at midday
            TieSpec(2, "SS-GRID2", 7.4, initial_recv_mwh=3.0))
    cfg = TransmissionConfig(ties=ties, counter_modulus_mwh=modulus, flow_deadband_mw=0.0, trip_rate_per_h=0.5)
    sim = TransmissionSystem(cfg, seed=2, start_ms=_local_midnight(T0))
    names = ("TIE1_MW", "MWH_SENT_T1", "MWH_RECV_T1", "TIE2_MW", "MWH_SENT_T2", "MWH_RECV_T2", "CB_T1_STATE",
             "CB_T2_STATE")
    rows = []
    dt_s = 10.0
    for _ in range(8640):  # one day
        sim.step(dt_s)
        rows.append([sim.value(n).value for n in names])
    first = [TransmissionSystem(cfg, seed=2, start_ms=T0).value(n).value for n in names]
    data = np.array([first, *rows])
    for tie, (mw_c, sent_c, recv_c) in ((1, (0, 1, 2)), (2, (3, 4, 5))):
        integ_pos = integ_neg = 0.0
        for p0, p1 in zip(data[:-1, mw_c], data[1:, mw_c], strict=True):
            pos, neg = _positive_negative(p0, p1, dt_s / 3600.0)
            integ_pos += pos
            integ_neg += neg
        for col, integ in ((sent_c, integ_pos), (recv_c, integ_neg)):
            steps = np.diff(data[:, col])
            wraps = steps < 0
            assert np.all(steps[~wraps] >= 0), f"tie {tie}: counter went backwards"
            assert np.allclose(steps[wraps], -modulus, atol=1.0)  # only at the roll-over
            delta = steps.sum() + modulus * wraps.sum()
            assert delta == pytest.approx(integ, rel=1e-3, abs=0.002)
        totals = sim.energy_totals_mwh(tie)
        assert totals[0] - ties[tie - 1].initial_sent_mwh == pytest.approx(integ_pos, rel=1e-3)
    assert (np.diff(data[:, 1]) < 0).sum() == 1  # TIE1 sent counter rolled over once (95 + ~150 MWh)
    assert data[-1, 2] > 1.0  # midday PV pushed energy back through tie 1
    assert (data[:, 6] == DoubleState.OFF).any()  # trips happened and the counters kept consistent across them


def test_breaker_trips_reclose_and_operate():
    cfg = TransmissionConfig(trip_rate_per_h=20.0, reclose_delay_s=5.0, reclose_success=0.5)
    sim = TransmissionSystem(cfg, seed=4, start_ms=T0)
    seen = []
    for _ in range(3600):
        for v in sim.step(1.0):
            if v.name == "CB_T1_STATE":
                seen.append(v.value)
    assert DoubleState.OFF in seen and DoubleState.ON in seen  # trips and successful recloses
    # explicit operation
    sim.operate_breaker("CB_T1_STATE", close=True)
    sim.step(1.0)
    assert sim.operate_breaker("CB_T1_STATE", close=True) in (BreakerResult.ALREADY_IN_POSITION,
                                                              BreakerResult.OPERATED)
    calm = TransmissionSystem(seed=4, start_ms=T0)
    assert calm.operate_breaker("CB_T2_STATE", close=False) is BreakerResult.OPERATED
    changes = {v.name: v for v in calm.step(1.0)}
    assert changes["CB_T2_STATE"].value == DoubleState.OFF and changes["TIE2_MW"].value == 0.0
    sent = calm.value("MWH_SENT_T2").value
    for _ in range(60):
        calm.step(1.0)
    assert calm.value("MWH_SENT_T2").value == sent and calm.value("CB_T2_STATE").value == DoubleState.OFF
    assert calm.value("BUS_T2_KV").value > 33.0  # the transmission bus stays live
    assert calm.operate_breaker("CB_T2_STATE", close=False) is BreakerResult.ALREADY_IN_POSITION
    assert calm.operate_breaker("CB_T2_STATE", close=True) is BreakerResult.OPERATED
    calm.step(1.0)
    assert calm.value("TIE2_MW").value > 1.0
    with pytest.raises(TransmissionSimError, match="'TIE1_MW' is not a breaker"):
        calm.operate_breaker("TIE1_MW", close=False)
    with pytest.raises(TransmissionSimError, match="no point 'CB_T9_STATE'"):
        calm.operate_breaker("CB_T9_STATE", close=False)


def test_forced_quality_is_reported_by_exception():
    sim = TransmissionSystem(seed=1, start_ms=T0)
    sim.step(1.0)
    sim.force_quality("BUS_T1_KV", Quality.QUESTIONABLE | Quality.TIME_INVALID)
    got = {v.name: v for v in sim.step(1.0)}
    assert got["BUS_T1_KV"].quality == Quality.QUESTIONABLE | Quality.TIME_INVALID
    sim.force_quality("BUS_T1_KV", Quality.GOOD)
    got = {v.name: v for v in sim.step(1.0)}
    assert got["BUS_T1_KV"].quality is Quality.GOOD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ties": ()}, "at least one tie"),
        ({"ties": (TieSpec(1, "A", 1.0), TieSpec(1, "B", 1.0))}, "distinct numbers"),
        ({"f_min_hz": 50.1}, "f_min_hz < nominal_hz"),
        ({"agc_time_s": 0.0}, "agc_time_s must be positive"),
        ({"reclose_success": 1.5}, "reclose_success"),
        ({"load_shape": (1.0,) * 23}, "24 non-negative"),
        ({"counter_modulus_mwh": 10.0, "ties": (TieSpec(1, "A", 1.0, initial_sent_mwh=10.0),)}, "below"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(TransmissionSimError, match=message):
        TransmissionConfig(**kwargs)


def test_tie_and_step_errors():
    with pytest.raises(TransmissionSimError, match="tie 1 \\(X\\): peak_mw must be positive"):
        TieSpec(1, "X", 0.0)
    sim = TransmissionSystem(seed=0, start_ms=T0)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(TransmissionSimError, match="dt_s"):
            sim.step(bad)


def test_tie_flows_follow_the_distribution_network_when_given():
    """A tie named in ``tie_flows`` carries what the distribution side draws there (plus the 0.2 % measurement
    noise); the others keep their load curve, and an open tie breaker still carries nothing."""
    drawn = {"SS-GRID1": (3.25, 1.1)}
    sim = TransmissionSystem(seed=1, start_ms=T0, tie_flows=lambda: drawn)
    curve = TransmissionSystem(seed=1, start_ms=T0)
    sim.step(1.0)
    curve.step(1.0)
    assert sim.value("TIE1_MW").value == pytest.approx(3.25, rel=0.01)
    assert sim.value("TIE1_MVAR").value == pytest.approx(1.1, rel=0.02)
    assert sim.value("TIE2_MW").value == pytest.approx(curve.value("TIE2_MW").value, rel=1e-9)
    drawn["SS-GRID1"] = (4.0, 1.5)  # the network's next flow
    sim.step(1.0)
    assert sim.value("TIE1_MW").value == pytest.approx(4.0, rel=0.01)
    assert sim.operate_breaker("CB_T1_STATE", close=False) is BreakerResult.OPERATED
    sim.step(1.0)
    assert sim.value("TIE1_MW").value == 0.0


def test_grid_source_injections_of_the_sample_network_balance_its_load():
    """What the hosted transmission simulator's ties carry (``GridPhysics.source_injections``): per grid source, the
    flow into the branches at its bus; together they supply the loads plus the network's losses."""
    from models.sample_network import build_sample_network
    from rtu_sim.physics import GridPhysics

    physics = GridPhysics(build_sample_network(), seed=7)
    assert physics.source_injections() == {}  # nothing solved yet
    snap = physics.solve(epoch_s=12 * 3600.0)
    flows = physics.source_injections(snap)
    assert set(flows) == {"SS-GRID1", "SS-GRID2"}
    p_mw = sum(p for p, _ in flows.values())
    load_mw = float(snap.load_p_kw.sum()) / 1000.0
    assert all(p > 1.0 and q > 0.0 for p, q in flows.values())
    assert load_mw < p_mw < 1.05 * load_mw  # a few per cent of losses on the 33/11 kV transformers and cables
