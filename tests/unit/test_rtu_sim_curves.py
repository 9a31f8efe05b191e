"""Load curves, energy accumulation, token-bucket pacing and quality parsing of the RTU simulator (no sockets)."""

from __future__ import annotations

import calendar

import pytest

from models.config import LoadCurve
from models.points import PointKind, Quality
from rtu_sim.control_socket import RequestError, parse_quality
from rtu_sim.curves import LOAD_SHAPES, curve_multiplier, energy_kwh, hour_of_day
from rtu_sim.outstation104 import quality_flags_supported
from rtu_sim.pacing import TokenBucket


@pytest.mark.parametrize("curve", list(LoadCurve))
def test_curve_passes_through_the_hourly_values(curve: LoadCurve) -> None:
    for h, v in enumerate(LOAD_SHAPES[curve]):
        assert curve_multiplier(curve, float(h)) == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("curve", list(LoadCurve))
def test_curve_is_smooth_and_wraps_at_midnight(curve: LoadCurve) -> None:
    minutes = [curve_multiplier(curve, m / 60.0) for m in range(24 * 60 + 1)]
    steps = [abs(b - a) for a, b in zip(minutes, minutes[1:], strict=False)]
    assert max(steps) < 0.01  # no jumps between consecutive minutes
    assert minutes[0] == pytest.approx(minutes[-1])
    assert curve_multiplier(curve, -1.0) == pytest.approx(curve_multiplier(curve, 23.0))
    assert curve_multiplier(curve, 49.5) == pytest.approx(curve_multiplier(curve, 1.5))
    assert 0.2 < min(minutes) and max(minutes) < 1.05


def test_curve_shapes_have_their_daily_pattern() -> None:
    res = lambda h: curve_multiplier(LoadCurve.RESIDENTIAL, h)  # noqa: E731
    com = lambda h: curve_multiplier(LoadCurve.COMMERCIAL, h)  # noqa: E731
    assert res(19.5) > res(7.5) > res(3.0)  # evening peak, morning peak, night trough
    assert com(11.0) > com(19.0) > com(3.0)  # business hours
    assert curve_multiplier(LoadCurve.FLAT, 13.37) == 1.0


def test_energy_accumulates_nominal_per_hour_times_curve() -> None:
    t0 = calendar.timegm((2025, 1, 15, 0, 0, 0))
    assert energy_kwh(LoadCurve.FLAT, 3600.0, t0, t0 + 3600) == pytest.approx(3600.0)
    assert energy_kwh(LoadCurve.FLAT, 3600.0, t0, t0 + 0.1) == pytest.approx(0.1)
    assert energy_kwh(LoadCurve.FLAT, 3600.0, t0 + 5, t0) == 0.0
    # Summing small steps over a day gives nominal x the mean of the curve (trapezoid over 10 s steps).
    total = sum(energy_kwh(LoadCurve.RESIDENTIAL, 1000.0, t0 + k * 10, t0 + (k + 1) * 10) for k in range(8640))
    hours = [hour_of_day(t0 + k * 60) for k in range(1440)]
    mean = sum(curve_multiplier(LoadCurve.RESIDENTIAL, h) for h in hours) / len(hours)
    assert total == pytest.approx(1000.0 * 24 * mean, rel=1e-3)


def test_hour_of_day_utc() -> None:
    t = calendar.timegm((2025, 6, 1, 13, 30, 36))
    assert hour_of_day(t, utc=True) == pytest.approx(13.51)
    assert hour_of_day(t + 0.5, utc=True) == pytest.approx(13.51 + 0.5 / 3600)


def test_token_bucket_paces_to_its_rate() -> None:
    b = TokenBucket(1000.0, burst=5, now_s=0.0)
    assert b.available(0.0) == 5
    b.consume(5)
    assert b.available(0.0) == 0
    assert b.available(0.002) == 2
    b.consume(2)
    assert b.available(10.0) == 5  # idle time never builds more than one burst
    b.consume(5)
    sent, t = 0, 10.0
    while t < 11.0:  # a 1 ms sender loop over one second
        t += 0.001
        n = b.available(t)
        b.consume(n)
        sent += n
    assert 995 <= sent <= 1005
    assert b.available(t - 5.0) == 0  # the clock going backwards adds nothing


def test_token_bucket_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(10.0, burst=0.5)
    b = TokenBucket(10.0, burst=2)
    with pytest.raises(ValueError, match="cannot take 3"):
        b.consume(3)
    assert TokenBucket(10.0).burst == 1.0  # default burst: 20 ms worth, at least one


def test_quality_names_parse_to_flags() -> None:
    assert parse_quality(None) is Quality.GOOD
    assert parse_quality([]) is Quality.GOOD
    assert parse_quality(["invalid", "Not-Topical"]) == Quality.INVALID | Quality.NOT_TOPICAL
    assert parse_quality("substituted") == Quality.SUBSTITUTED
    with pytest.raises(RequestError, match="'stale'"):
        parse_quality(["stale"])


def test_iec104_quality_per_point_kind() -> None:
    assert quality_flags_supported(PointKind.COUNTER) == Quality.INVALID
    assert Quality.OVERFLOW not in quality_flags_supported(PointKind.DOUBLE)
    assert Quality.OVERFLOW in quality_flags_supported(PointKind.ANALOG)
    assert Quality.COMM_LOST not in quality_flags_supported(PointKind.ANALOG)  # a control-centre flag
