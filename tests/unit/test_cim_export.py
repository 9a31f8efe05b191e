"""The CIM exporter: export -> import gives the same network (elements, mRIDs, impedances, switch states, customers)
and the same balanced power flow, on the IEEE reference feeders and the embedded sample network."""

from __future__ import annotations

import dataclasses
import gzip
import math
import re
from pathlib import Path

import numpy as np
import pytest

from models.cim import CimError, load_cim
from models.cim.export import to_rdf_xml, write_cim
from models.network import NetworkModel, Phase
from models.pandapower_net import run_balanced_powerflow
from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH, build_sample_network
from tests.support import IEEE13, IEEE123, requires_reference_feeders

ELEMENT_KINDS = ("buses", "terminals", "lines", "transformers", "tap_changers", "switches", "loads", "capacitors",
                 "ders", "sources", "feeders", "measurements", "customers", "other_equipment")


def _differences(a: object, b: object, where: str = "") -> list[str]:
    """Field-by-field comparison: NaN equals NaN, arrays with allclose (rtol 1e-12), dataclasses recursively."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        if type(a) is not type(b):
            return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
        out: list[str] = []
        for f in dataclasses.fields(a):
            if f.name.startswith("_"):
                continue
            out += _differences(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
        return out
    if isinstance(a, np.ndarray):
        ok = isinstance(b, np.ndarray) and a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=0.0)
        return [] if ok else [f"{where}: arrays differ"]
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
        return [] if same else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def assert_same_network(original: NetworkModel, again: NetworkModel) -> None:
    assert again.counts() == original.counts()
    problems = [d for kind in ELEMENT_KINDS
                for d in _differences(getattr(original, kind), getattr(again, kind), kind)]
    assert problems == [], problems[:10]


def assert_same_powerflow(original: NetworkModel, again: NetworkModel, f_hz: float) -> None:
    first = run_balanced_powerflow(original, f_hz=f_hz)
    second = run_balanced_powerflow(again, f_hz=f_hz)
    assert [b.name for b in first.buses] == [b.name for b in second.buses]
    np.testing.assert_allclose([b.vm_pu for b in second.buses], [b.vm_pu for b in first.buses], rtol=0, atol=1e-9)
    np.testing.assert_allclose([b.va_degree for b in second.buses], [b.va_degree for b in first.buses], rtol=0,
                               atol=1e-7)


@requires_reference_feeders()
@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", [IEEE123, IEEE13], ids=["IEEE123", "IEEE13"])
def test_ieee_feeder_round_trip(source: Path, tmp_path: Path) -> None:
    original = load_cim(source)
    again = load_cim(write_cim(original, tmp_path / "again.xml"))
    assert_same_network(original, again)
    # The facts a round trip could lose: switch states, impedance matrices, tap positions, measurement bindings.
    assert {s.name: (s.normal_open, s.open) for s in again.switches} == \
        {s.name: (s.normal_open, s.open) for s in original.switches}
    for a, b in zip(original.lines, again.lines, strict=True):
        assert np.allclose(a.r_ohm_per_m, b.r_ohm_per_m) and np.allclose(a.x_ohm_per_m, b.x_ohm_per_m)
        assert np.allclose(a.b_s_per_m, b.b_s_per_m)
    assert [t.step for t in again.tap_changers] == [t.step for t in original.tap_changers]
    assert_same_powerflow(original, again, 60.0)


@requires_reference_feeders()
@pytest.mark.timeout(60)
def test_export_is_deterministic_and_a_fixed_point() -> None:
    model = load_cim(IEEE13)
    first = to_rdf_xml(model)
    assert to_rdf_xml(model) == first
    text = first.decode()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<rdf:RDF xmlns:cim="http://iec.ch/TC57/CIM100#"')
    assert 'rdf:about="urn:uuid:' in text and "rdf:ID" not in text


@pytest.mark.timeout(60)
def test_sample_network_round_trip(tmp_path: Path) -> None:
    model = build_sample_network()
    again = load_cim(write_cim(model, tmp_path / "sample.xml"))
    assert_same_network(model, again)
    assert_same_powerflow(model, again, F_HZ)
    # written again from the re-imported model: the same bytes (nothing drifts on a second trip)
    assert to_rdf_xml(again) == to_rdf_xml(model)


@pytest.mark.timeout(60)
def test_usage_points_give_customers_and_fill_customer_count(tmp_path: Path) -> None:
    model = load_cim(SAMPLE_NETWORK_PATH)
    load = model.loads[0]
    mine = [c for c in model.customers if c.load_mrid == load.mrid]
    assert mine and all(c.load == 0 and c.bus == load.bus for c in mine)
    assert all(re.fullmatch(r"\d{12}", c.consumer_number) for c in mine)
    assert all(c.phases & Phase.N and c.kind is not None and c.connection_category for c in mine)
    # Without EnergyConsumer.customerCount in the file, the usage points are counted.
    text = re.sub(r"\s*<cim:EnergyConsumer\.customerCount>\d+</cim:EnergyConsumer\.customerCount>", "",
                  gzip.decompress(SAMPLE_NETWORK_PATH.read_bytes()).decode("utf-8"))
    assert "EnergyConsumer.customerCount" not in text
    path = tmp_path / "no_counts.xml"
    path.write_text(text, encoding="utf-8")
    counted = load_cim(path)
    per_load = {ld.mrid: 0 for ld in counted.loads}
    for c in counted.customers:
        per_load[c.load_mrid or ""] += 1
    assert [ld.customer_count for ld in counted.loads] == [per_load[ld.mrid] for ld in counted.loads]
    assert [ld.customer_count for ld in counted.loads] == [ld.customer_count for ld in model.loads]
    # A usage point naming equipment that is not in the file is refused, naming the usage point.
    first = mine[0]
    broken = re.sub(r'(<cim:UsagePoint\.Equipments rdf:resource="urn:uuid:)[^"]+', r"\g<1>00000000-dead", text, count=1)
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(CimError, match=rf"UsagePoint {first.mrid} '{first.consumer_number}': UsagePoint.Equipments "
                                       r"refers to 00000000-dead, which is not in the file"):
        load_cim(path)


@pytest.mark.timeout(60)
def test_customer_location_and_kind_round_trip(tmp_path: Path) -> None:
    model = build_sample_network()
    first, second = model.customers[0], model.customers[1]
    located = dataclasses.replace(first, x=73.85, y=18.52)
    bare = dataclasses.replace(second, kind=None, customer_mrid=None, agreement_mrid=None, connection_category="")
    changed = dataclasses.replace(model, customers=(located, bare, *model.customers[2:]))
    again = load_cim(write_cim(changed, tmp_path / "customers.xml"))
    assert _differences(changed.customers, again.customers, "customers") == []
    assert (again.customers[0].x, again.customers[0].y) == (73.85, 18.52)
    assert again.customers[1].kind is None and again.customers[1].agreement_mrid is None
