"""The embedded sample network: a realistic Indian urban 11 kV distribution network, generated deterministically.

``build_sample_network()`` returns it as a ``NetworkModel``; ``export_sample(dir)`` writes it as CIM100 RDF/XML
through the project's own exporter (``models.cim.export``), and the committed ``models/data/sample_network.xml.gz`` is
that output (a test checks they are equal), so ``make demo`` needs no data from outside the project. mRIDs are uuid5
of the element names; random choices (cable lengths, DT ratings, customer mix) come from one fixed seed.

Substation ``SS`` (33/11 kV, Pune, India), 50 Hz::

    SS-GRID1 (33 kV) - SS-INC1 - SS-TR1 (10 MVA, Dyn11, OLTC SS-TR1-OLTC) - SS-BUS1 - F1-CB, F2-CB, F3-CB
                                                                              |
                                                                           SS-BC (normally open)
                                                                              |
    SS-GRID2 (33 kV) - SS-INC2 - SS-TR2 (10 MVA, Dyn11, OLTC SS-TR2-OLTC) - SS-BUS2 - F4-CB, F5-CB, F6-CB

Each feeder ``F<n>`` (a CIM Feeder) runs from ``F<n>-CB`` through 3C Al XLPE cables (300 sq.mm to RMU04, 240 to
RMU06, 185 beyond) to eight ring main units ``F<n>-RMU01..08``. An RMU is a busbar (BusbarSection
``F<n>-RMU<kk>-BB``) with ring load-break switches ``-LBS1`` (towards the substation) and ``-LBS2`` (away) and a tee
(``-TEE``: a fuse, or a breaker for a 990 kVA unit) to distribution transformer ``-DT`` (11/0.433 kV, Dyn11) whose
LV bus carries the aggregate load ``-LOAD`` (ZIP LoadResponseCharacteristic by customer mix) and its customers
(UsagePoints named by 12-digit consumer numbers ``17001<n><kk><iiii>``, with Customer.kind and tariff category).

Normally-open points (``normalOpen = open = true``): ``F1-RMU08-LBS2`` (tie cable to F2-RMU08, same bus section),
``F3-RMU08-LBS2`` (to F4-RMU08: closing it parallels SS-GRID1 and SS-GRID2 through both transformers),
``F5-RMU08-LBS2`` (to F6-RMU08, same bus section), and the bus coupler ``SS-BC``. Overhead spurs on F3 and F6 leave
RMU05 through recloser ``F<n>-REC1`` (ACSR Dog), sectionaliser ``F<n>-SEC1`` and a pole-mounted 250 kVA
``F<n>-SPUR-DT``.

Per feeder (peak, balanced flow at 50 Hz; current out of the breaker; cable km include the tie cable a feeder holds):

=======  =======  ===============================================  ======  =====  ====  =========================
feeder   bus      DTs (kVA, RMU01..08 [+ spur])                    peak    amps   km    customers (LT-I/II/V)
=======  =======  ===============================================  ======  =====  ====  =========================
F1       SS-BUS1  250 990 630 400 400 990 990 630                  2.83MW  171 A  4.7   510 (479/31/0)
F2       SS-BUS1  630 990 630 990 400 400 250 990                  2.47MW  148 A  4.9   432 (395/37/0)
F3       SS-BUS1  630 990 400 630 630 250 250 990 + spur 250       2.37MW  142 A  5.6   284 (166/118/0)
F4       SS-BUS2  400 630 990 400 250 250 400 990                  2.67MW  160 A  5.1   473 (439/34/0)
F5       SS-BUS2  400 990 630 250 250 990 630 400                  2.42MW  145 A  4.7   160 (96/42/22)
F6       SS-BUS2  250 250 250 990 250 990 630 630 + spur 250       2.16MW  129 A  6.6   398 (379/19/0)
=======  =======  ===============================================  ======  =====  ====  =========================

In all: 262 buses, 55 line segments, 52 transformers (2 x 10 MVA, 50 DTs), 157 switches, 50 loads (14.9 MW),
2,257 customers, 210 analog and 101 discrete measurements; feeders at 43-57 % of a 300 A rating, bus voltages
0.967-1.002 pu with the OLTCs on step 6 (of 1..17, neutral 9).

Line ratings (``LineSegment.rated_current_a``, emergency 1.2 x; written as CIM CurrentLimits): 300 sq.mm 400 A,
240 sq.mm 355 A, 185 sq.mm (and the tie cables) 305 A, ACSR Dog 300 A.

``dscada model summary models/data/sample_network.xml.gz`` prints the counts.

Measurements (GridAPPS-D measurementType): ``Pos`` on SS-INC1/2, SS-BC, every F<n>-CB and every switch of the
automated RMUs (RMU03, RMU06 and RMU08 of every feeder: RMU08 is at a tie); ``PNV`` per phase on SS-BUS1/2 and each
automated RMU busbar; ``A`` per phase on each F<n>-CB and automated ring switch; ``VA`` per phase on each F<n>-CB
and SS-TR1/2 (11 kV side); the OLTC positions (``Pos`` on the transformer's HV terminal) and ``FPI`` on every
automated ring switch.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.cim.export import derived_mrid, to_rdf_xml, write_cim
from models.network import (
    Bus,
    Customer,
    CustomerKind,
    EnergySource,
    Feeder,
    LineSegment,
    Load,
    LoadResponse,
    Measurement,
    MeasurementKind,
    ModelDiagnostics,
    NetworkModel,
    OtherEquipment,
    Phase,
    SequenceImpedance,
    ShuntConnection,
    Switch,
    SwitchKind,
    TapChanger,
    TapChangerControl,
    Terminal,
    Transformer,
    TransformerMeshImpedance,
    TransformerWinding,
    WindingConnection,
)

__all__ = ["SAMPLE_FILE_NAME", "SAMPLE_NETWORK_PATH", "F_HZ", "build_sample_network", "export_sample"]

SAMPLE_FILE_NAME = "sample_network.xml"
# Shipped gzip-compressed (0.4 MB instead of 4.5 MB; the importer reads .gz directly), written with mtime 0 so the
# committed bytes are reproducible.
SAMPLE_NETWORK_PATH = Path(__file__).resolve().parent / "data" / f"{SAMPLE_FILE_NAME}.gz"
F_HZ = 50.0
NAME = "sample_network"  # what the importer names a file of several feeders: its stem
SEED = 20261126
ABC = Phase.A | Phase.B | Phase.C
SS_LON, SS_LAT = 73.8478, 18.5308  # Shivajinagar, Pune
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320 * math.cos(math.radians(SS_LAT))
RMUS_PER_FEEDER = 8
AUTOMATED_RMUS = (3, 6, 8)  # RMU08 sits at a normally-open tie on every feeder
# Planning limit of a feeder: its weakest conductor (185 sq.mm cable 305 A, ACSR Dog 300 A; see CABLES), which is
# what a ring or a backfed tie must carry. Peak loads are set as a share of it (_Area.loading).
FEEDER_RATING_A = 300.0
EMERGENCY_FACTOR = 1.2  # short-time (emergency) rating of every conductor, over its normal rating
TIES = ((1, 2), (3, 4), (5, 6))  # (feeder whose RMU08-LBS2 is the open point, the other feeder)
SPUR_FEEDERS = (3, 6)
POWER_FACTOR = 0.9


@dataclass(frozen=True, slots=True)
class _Conductor:
    name: str
    r_ohm_per_km: float
    x_ohm_per_km: float
    c_uf_per_km: float
    r0_ohm_per_km: float
    x0_ohm_per_km: float
    c0_uf_per_km: float
    rated_a: float  # continuous current rating (normal); the emergency rating is EMERGENCY_FACTOR times it


# 11 kV 3C Al XLPE (individually screened cores: C0 = C1) at 90 degC, rated laid direct in ground, and ACSR "Dog"
# overhead on 11 kV poles.
CABLES = {
    300: _Conductor("3C-300-AL-XLPE-11kV", 0.130, 0.094, 0.40, 0.82, 0.31, 0.40, 400.0),
    240: _Conductor("3C-240-AL-XLPE-11kV", 0.161, 0.097, 0.37, 0.87, 0.33, 0.37, 355.0),
    185: _Conductor("3C-185-AL-XLPE-11kV", 0.211, 0.100, 0.34, 0.93, 0.35, 0.34, 305.0),
}
OVERHEAD = _Conductor("ACSR-DOG-100-11kV", 0.300, 0.350, 0.010, 0.450, 1.300, 0.005, 300.0)


@dataclass(frozen=True, slots=True)
class _Area:
    """Customer mix of a feeder: share of the peak load per kind and diversified peak kW per customer."""

    label: str
    residential: float
    commercial: float
    industrial: float
    loading: float  # peak feeder current as a fraction of FEEDER_RATING_A


AREAS = {
    1: _Area("residential", 0.85, 0.13, 0.02, 0.55),
    2: _Area("residential", 0.80, 0.17, 0.03, 0.48),
    3: _Area("commercial", 0.35, 0.60, 0.05, 0.46),
    4: _Area("residential", 0.82, 0.15, 0.03, 0.52),
    5: _Area("industrial", 0.20, 0.20, 0.60, 0.47),
    6: _Area("residential", 0.88, 0.10, 0.02, 0.42),
}
# (kind, MSEDCL-style tariff category, diversified peak kW per customer, share of customers on three phases)
CUSTOMER_CLASSES = {
    "residential": (CustomerKind.RESIDENTIAL, "LT-I Residential", 5.0, 0.05),
    "commercial": (CustomerKind.COMMERCIAL_INDUSTRIAL, "LT-II Commercial", 12.0, 0.30),
    "industrial": (CustomerKind.COMMERCIAL_INDUSTRIAL, "LT-V Industrial", 60.0, 1.0),
}
# ZIP characteristics (percent Z / I / P of P and of Q) by the dominant customer class of the DT.
ZIP = {
    "residential": (45.0, 30.0, 25.0, 70.0, 20.0, 10.0),
    "commercial": (30.0, 30.0, 40.0, 60.0, 20.0, 20.0),
    "industrial": (10.0, 20.0, 70.0, 40.0, 20.0, 40.0),
}
DT_RATINGS_KVA = (250, 400, 630, 990)
DT_Z_PCT = {250: 4.0, 400: 4.5, 630: 4.5, 990: 5.0}
DT_X_OVER_R = {250: 3.5, 400: 4.0, 630: 5.0, 990: 5.5}


def _mrid(kind: str, name: str) -> str:
    return derived_mrid("dscada-sample", kind, name)


class _Builder:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.buses: list[Bus] = []
        self.bus_index: dict[str, int] = {}
        self.terminals: list[Terminal] = []
        self.lines: list[LineSegment] = []
        self.transformers: list[Transformer] = []
        self.taps: list[TapChanger] = []
        self.switches: list[Switch] = []
        self.loads: list[Load] = []
        self.sources: list[EnergySource] = []
        self.measurements: list[Measurement] = []
        self.customers: list[Customer] = []
        self.other: list[OtherEquipment] = []
        self.feeders = [Feeder(_mrid("Feeder", f"F{n}"), f"F{n}") for n in range(1, 7)]
        self.impedances = {c.name: self._sequence(c) for c in (*CABLES.values(), OVERHEAD)}
        self.responses = {k: LoadResponse(_mrid("LoadResponseCharacteristic", f"ZIP-{k}"), f"ZIP-{k}", False,
                                          *v, 0.0, 0.0) for k, v in ZIP.items()}

    # ---- primitives ----------------------------------------------------------------------------------------------
    def feeder(self, n: int | None) -> str | None:
        return None if n is None else self.feeders[n - 1].mrid

    def bus(self, name: str, nominal_v: float, lon: float, lat: float, feeder: int | None) -> int:
        index = len(self.buses)
        mrid = _mrid("ConnectivityNode", name)
        self.buses.append(Bus(index, mrid, name, (mrid,), ABC, nominal_v, lon, lat, self.feeder(feeder)))
        self.bus_index[name] = index
        return index

    def terminal(self, eq_mrid: str, eq_name: str, seq: int, bus: int) -> str:
        mrid = _mrid("Terminal", f"{eq_name}/T{seq}")
        self.terminals.append(Terminal(mrid, f"{eq_name}_T{seq}", eq_mrid, seq, bus))
        return mrid

    def terminals_of(self, eq_mrid: str, eq_name: str, buses: Sequence[int]) -> list[str]:
        return [self.terminal(eq_mrid, eq_name, i, b) for i, b in enumerate(buses, start=1)]

    @staticmethod
    def _sequence(c: _Conductor) -> SequenceImpedance:
        w = 2 * math.pi * F_HZ
        return SequenceImpedance(_mrid("PerLengthSequenceImpedance", c.name), c.name, c.r_ohm_per_km / 1e3,
                                 c.x_ohm_per_km / 1e3, c.r0_ohm_per_km / 1e3, c.x0_ohm_per_km / 1e3,
                                 w * c.c_uf_per_km * 1e-9, w * c.c0_uf_per_km * 1e-9)

    def line(self, name: str, a: int, b: int, conductor: _Conductor, length_m: float, feeder: int) -> LineSegment:
        seq = self.impedances[conductor.name]
        mats = []
        for z1, z0 in ((seq.r_ohm_per_m, seq.r0_ohm_per_m), (seq.x_ohm_per_m, seq.x0_ohm_per_m),
                       (seq.b_s_per_m, seq.b0_s_per_m)):
            m = np.full((3, 3), (z0 - z1) / 3.0)  # the importer's phase frame of a sequence impedance
            np.fill_diagonal(m, (2.0 * z1 + z0) / 3.0)
            m.flags.writeable = False
            mats.append(m)
        mrid = _mrid("ACLineSegment", name)
        self.terminals_of(mrid, name, (a, b))
        seg = LineSegment(mrid, name, a, b, (Phase.A, Phase.B, Phase.C), float(length_m), seq.mrid, seq.name,
                          mats[0], mats[1], mats[2], seq, self.feeder(feeder), conductor.rated_a,
                          round(conductor.rated_a * EMERGENCY_FACTOR, 1))
        self.lines.append(seg)
        return seg

    def switch(self, name: str, kind: SwitchKind, a: int, b: int, rated_a: float, breaking_a: float,
               feeder: int | None, *, normal_open: bool = False) -> Switch:
        mrid = _mrid(kind.value, name)
        self.terminals_of(mrid, name, (a, b))
        sw = Switch(mrid, name, kind, a, b, ABC, normal_open, normal_open, float(rated_a), float(breaking_a), (),
                    self.feeder(feeder))
        self.switches.append(sw)
        return sw

    def transformer(self, name: str, hv: int, lv: int, rated_s_va: float, hv_v: float, lv_v: float, z_pct: float,
                    x_over_r: float, no_load_pct: float, i0_pct: float, feeder: int | None) -> Transformer:
        mrid = _mrid("PowerTransformer", name)
        t1, t2 = self.terminals_of(mrid, name, (hv, lv))
        z_ohm = z_pct / 100 * hv_v ** 2 / rated_s_va  # referred to the HV end (the mesh impedance's from end)
        r_ohm = z_ohm / math.hypot(1.0, x_over_r)
        x_ohm = r_ohm * x_over_r
        lv_ratio = (lv_v / hv_v) ** 2
        windings = (
            TransformerWinding(_mrid("PowerTransformerEnd", f"{name}/1"), f"{name}_End1", 1, hv, t1, ABC,
                               WindingConnection.D, hv_v, rated_s_va, r_ohm / 2, False, None),
            TransformerWinding(_mrid("PowerTransformerEnd", f"{name}/2"), f"{name}_End2", 2, lv, t2, ABC,
                               WindingConnection.YN, lv_v, rated_s_va, r_ohm / 2 * lv_ratio, True, None),
        )
        g_s = no_load_pct / 100 * rated_s_va / hv_v ** 2
        y_s = i0_pct / 100 * rated_s_va / hv_v ** 2
        tr = Transformer(mrid, name, "Dyn11", windings, (), (TransformerMeshImpedance(1, 2, r_ohm, x_ohm),), g_s,
                         math.sqrt(y_s ** 2 - g_s ** 2), False, self.feeder(feeder))
        self.transformers.append(tr)
        return tr

    def busbar(self, name: str, bus: int, feeder: int | None) -> str:
        mrid = _mrid("BusbarSection", name)
        term = self.terminal(mrid, name, 1, bus)
        self.other.append(OtherEquipment(mrid, name, "BusbarSection", self.feeder(feeder)))
        return term

    def measure(self, kind: MeasurementKind, mtype: str, element_mrid: str, element_name: str, element_class: str,
                terminal: str, phases: Sequence[Phase]) -> None:
        bus = next(t.bus for t in self.terminals if t.mrid == terminal)
        cls = "Analog" if kind is MeasurementKind.ANALOG else "Discrete"
        for p in phases:
            label = "".join(n for n, f in (("A", Phase.A), ("B", Phase.B), ("C", Phase.C)) if f in p)
            name = f"{cls}_{element_name}_{mtype}_{label}"
            self.measurements.append(Measurement(_mrid(cls, name), name, kind, mtype, p, element_mrid,
                                                 element_class, terminal, bus))

    def measure_switch(self, sw: Switch, *, current: bool = False, power: bool = False, fpi: bool = False) -> None:
        t1 = _mrid("Terminal", f"{sw.name}/T1")
        self.measure(MeasurementKind.DISCRETE, "Pos", sw.mrid, sw.name, sw.kind.value, t1, (ABC,))
        if current:
            self.measure(MeasurementKind.ANALOG, "A", sw.mrid, sw.name, sw.kind.value, t1, (Phase.A, Phase.B, Phase.C))
        if power:
            self.measure(MeasurementKind.ANALOG, "VA", sw.mrid, sw.name, sw.kind.value, t1,
                         (Phase.A, Phase.B, Phase.C))
        if fpi:
            self.measure(MeasurementKind.DISCRETE, "FPI", sw.mrid, sw.name, sw.kind.value, t1, (ABC,))

    # ---- the network ---------------------------------------------------------------------------------------------
    def substation(self) -> None:
        for i in (1, 2):
            dx = -0.06 if i == 1 else 0.06  # km: the two bays side by side
            lon, lat = _offset(SS_LON, SS_LAT, dx, 0.0)
            grid = self.bus(f"SS-GRID{i}", 33000.0, *_offset(lon, lat, 0.0, 0.05), None)
            hv = self.bus(f"SS-TR{i}-HV", 33000.0, *_offset(lon, lat, 0.0, 0.03), None)
            lv = self.bus(f"SS-BUS{i}", 11000.0, lon, lat, None)
            src_mrid = _mrid("EnergySource", f"SS-GRID{i}")
            self.terminal(src_mrid, f"SS-GRID{i}", 1, grid)
            z = 33000.0 ** 2 / (750e6 if i == 1 else 600e6)  # fault levels of the two grid substations
            r, x = z / math.hypot(1, 10), z * 10 / math.hypot(1, 10)
            self.sources.append(EnergySource(src_mrid, f"SS-GRID{i}", grid, 33000.0, 33000.0, 0.0, r, x, 2 * r,
                                             3 * x))
            inc = self.switch(f"SS-INC{i}", SwitchKind.BREAKER, grid, hv, 1250, 25000, None)
            self.measure_switch(inc)
            tr = self.transformer(f"SS-TR{i}", hv, lv, 10e6, 33000.0, 11000.0, 8.35, 15.0, 0.09, 0.6, None)
            lv_term = _mrid("Terminal", f"SS-TR{i}/T2")
            ctl = TapChangerControl(_mrid("TapChangerControl", f"SS-TR{i}-AVR"), f"SS-TR{i}-AVR", "voltage",
                                    112.0, 1.5, Phase.A, lv_term, False, 0.0, 0.0, True)
            hv_end = tr.windings[0]
            self.taps.append(TapChanger(
                _mrid("RatioTapChanger", f"SS-TR{i}-OLTC"), f"SS-TR{i}-OLTC", tr.mrid, hv_end.end_mrid, 1, hv, ABC,
                6.0, 9, 9, 17, 1, 1.25, 33000.0, True, 100.0, 600.0, ctl))
            self.measure(MeasurementKind.ANALOG, "VA", tr.mrid, tr.name, "PowerTransformer", lv_term,
                         (Phase.A, Phase.B, Phase.C))
            self.measure(MeasurementKind.DISCRETE, "Pos", tr.mrid, tr.name, "PowerTransformer", hv_end.terminal_mrid,
                         (ABC,))
            bb = self.busbar(f"SS-BUS{i}", lv, None)
            self.measure(MeasurementKind.ANALOG, "PNV", _mrid("BusbarSection", f"SS-BUS{i}"), f"SS-BUS{i}",
                         "BusbarSection", bb, (Phase.A, Phase.B, Phase.C))
        bc = self.switch("SS-BC", SwitchKind.BREAKER, self.bus_index["SS-BUS1"], self.bus_index["SS-BUS2"], 1250,
                         25000, None, normal_open=True)
        self.measure_switch(bc)

    def feeder_line(self, n: int) -> None:
        area = AREAS[n]
        sec = 1 if n <= 3 else 2
        ss_bus = self.bus_index[f"SS-BUS{sec}"]
        lengths = [self.rng.randrange(250, 900, 10) for _ in range(RMUS_PER_FEEDER)]
        ratings = [self.rng.choice(DT_RATINGS_KVA) for _ in range(RMUS_PER_FEEDER)]
        spur = n in SPUR_FEEDERS
        total_kva = sum(ratings) + (250 if spur else 0)
        # Peak apparent power so the breaker carries the target share of the feeder rating (losses come on top).
        feeder_va = area.loading * FEEDER_RATING_A * math.sqrt(3) * 11000.0
        pair = next(p for p in TIES if n in p)
        centre = {TIES[0]: 30.0, TIES[1]: 150.0, TIES[2]: 270.0}[pair]
        side = -1.0 if n == pair[0] else 1.0
        head_lon, head_lat = _offset(self.buses[ss_bus].x, self.buses[ss_bus].y, 0.0, -0.02)
        head = self.bus(f"F{n}-HEAD", 11000.0, head_lon, head_lat, n)
        cb = self.switch(f"F{n}-CB", SwitchKind.BREAKER, ss_bus, head, 630, 25000, n)
        self.measure_switch(cb, current=True, power=True)
        previous = head
        radius_km = 0.0
        for k in range(1, RMUS_PER_FEEDER + 1):
            radius_km += 0.85 * lengths[k - 1] / 1000  # cable routes follow streets: not straight
            spread = 28.0 - (28.0 - 3.5) * k / RMUS_PER_FEEDER
            angle = math.radians(centre + side * spread)
            lon, lat = _offset(SS_LON, SS_LAT, radius_km * math.cos(angle), radius_km * math.sin(angle))
            previous = self.rmu(n, k, previous, lengths[k - 1], lon, lat, ratings[k - 1], feeder_va * ratings[k - 1]
                                / total_kva, area)
            if spur and k == 5:
                self.spur(n, lon, lat, feeder_va * 250 / total_kva, area)

    def rmu(self, n: int, k: int, upstream: int, length_m: float, lon: float, lat: float, kva: int, load_va: float,
            area: _Area) -> int:
        tag = f"F{n}-RMU{k:02d}"
        size = 300 if k <= 4 else (240 if k <= 6 else 185)
        ring_in = self.bus(f"{tag}-IN", 11000.0, lon, lat, n)
        bb = self.bus(f"{tag}-BB", 11000.0, lon, lat, n)
        ring_out = self.bus(f"{tag}-OUT", 11000.0, lon, lat, n)
        dt_hv = self.bus(f"{tag}-DT-HV", 11000.0, *_offset(lon, lat, 0.012, 0.0), n)
        dt_lv = self.bus(f"{tag}-DT-LV", 433.0, *_offset(lon, lat, 0.015, 0.0), n)
        self.line(f"F{n}-C{k:02d}", upstream, ring_in, CABLES[size], length_m, n)
        automated = k in AUTOMATED_RMUS
        bb_term = self.busbar(f"{tag}-BB", bb, n)
        lbs1 = self.switch(f"{tag}-LBS1", SwitchKind.LOAD_BREAK_SWITCH, ring_in, bb, 630, 630, n)
        open_tie = k == RMUS_PER_FEEDER and any(n == a for a, _b in TIES)
        lbs2 = self.switch(f"{tag}-LBS2", SwitchKind.LOAD_BREAK_SWITCH, bb, ring_out, 630, 630, n,
                           normal_open=open_tie)
        if kva >= 990:
            tee = self.switch(f"{tag}-TEE", SwitchKind.BREAKER, bb, dt_hv, 630, 20000, n)
        else:
            tee = self.switch(f"{tag}-TEE", SwitchKind.FUSE, bb, dt_hv, _fuse_a(kva), math.nan, n)
        self.distribution_transformer(n, tag, dt_hv, dt_lv, kva, load_va, area, k)
        if automated:
            for sw in (lbs1, lbs2):
                self.measure_switch(sw, current=True, fpi=True)
            self.measure_switch(tee)
            self.measure(MeasurementKind.ANALOG, "PNV", _mrid("BusbarSection", f"{tag}-BB"), f"{tag}-BB",
                         "BusbarSection", bb_term, (Phase.A, Phase.B, Phase.C))
        return ring_out

    def spur(self, n: int, lon: float, lat: float, load_va: float, area: _Area) -> None:
        bb = self.bus_index[f"F{n}-RMU05-BB"]
        out_angle = math.radians({3: 120.0, 6: 300.0}[n])
        points = [_offset(lon, lat, d * math.cos(out_angle), d * math.sin(out_angle)) for d in (0.02, 0.55, 0.56,
                                                                                             1.2)]
        rec_out = self.bus(f"F{n}-REC1-OUT", 11000.0, *points[0], n)
        sec_in = self.bus(f"F{n}-SEC1-IN", 11000.0, *points[1], n)
        sec_out = self.bus(f"F{n}-SEC1-OUT", 11000.0, *points[2], n)
        dt_hv = self.bus(f"F{n}-SPUR-DT-HV", 11000.0, *points[3], n)
        dt_lv = self.bus(f"F{n}-SPUR-DT-LV", 433.0, *_offset(*points[3], 0.003, 0.0), n)
        self.switch(f"F{n}-REC1", SwitchKind.RECLOSER, bb, rec_out, 400, 12500, n)
        self.line(f"F{n}-OH1", rec_out, sec_in, OVERHEAD, 620.0, n)
        self.switch(f"F{n}-SEC1", SwitchKind.SECTIONALISER, sec_in, sec_out, 400, math.nan, n)
        self.line(f"F{n}-OH2", sec_out, dt_hv, OVERHEAD, 740.0, n)
        self.distribution_transformer(n, f"F{n}-SPUR", dt_hv, dt_lv, 250, load_va, area, 90)

    def distribution_transformer(self, n: int, tag: str, hv: int, lv: int, kva: int, load_va: float, area: _Area,
                                 number: int) -> None:
        self.transformer(f"{tag}-DT", hv, lv, kva * 1e3, 11000.0, 433.0, DT_Z_PCT[kva], DT_X_OVER_R[kva], 0.25,
                         1.5, n)
        shares = {"residential": area.residential, "commercial": area.commercial, "industrial": area.industrial}
        dominant = max(shares, key=lambda c: shares[c])
        load_mrid = _mrid("EnergyConsumer", f"{tag}-LOAD")
        self.terminal(load_mrid, f"{tag}-LOAD", 1, lv)
        p_w = load_va * POWER_FACTOR
        q_var = load_va * math.sqrt(1 - POWER_FACTOR ** 2)
        first = len(self.customers)
        for cls, share in shares.items():
            kind, category, kw_each, three_phase = CUSTOMER_CLASSES[cls]
            count = round(p_w * share / (kw_each * 1e3))
            for _ in range(count):
                i = len(self.customers) - first + 1
                number_text = f"17001{n}{number:02d}{i:04d}"
                phases = ABC | Phase.N if self.rng.random() < three_phase else (
                    (Phase.A, Phase.B, Phase.C)[i % 3] | Phase.N)
                mrid = _mrid("UsagePoint", number_text)
                self.customers.append(Customer(
                    mrid, number_text, load_mrid, len(self.loads), lv, phases, kind, category, math.nan, math.nan,
                    _mrid("Customer", number_text), _mrid("CustomerAgreement", number_text)))
        self.loads.append(Load(load_mrid, f"{tag}-LOAD", lv, ABC, ShuntConnection.Y, p_w, q_var, (), (), True,
                               len(self.customers) - first, self.responses[dominant], self.feeder(n)))

    def ties(self) -> None:
        for a, b in TIES:
            last = f"RMU{RMUS_PER_FEEDER:02d}"
            end_a = self.bus_index[f"F{a}-{last}-OUT"]
            end_b = self.bus_index[f"F{b}-{last}-OUT"]
            km = _distance_km(self.buses[end_a], self.buses[end_b])
            length_m = min(900.0, max(200.0, round(km * 1150, -1)))
            # Energised from the feeder whose ring switch is closed: that feeder holds the cable.
            self.line(f"TIE-F{a}-F{b}", end_b, end_a, CABLES[185], length_m, b)

    def build(self) -> NetworkModel:
        self.substation()
        for n in range(1, 7):
            self.feeder_line(n)
        self.ties()
        order = {kind: i for i, kind in enumerate(SwitchKind)}  # the importer reads switches class by class
        switches = tuple(sorted(self.switches, key=lambda s: order[s.kind]))
        measurements = tuple(sorted(self.measurements, key=lambda m: m.kind is MeasurementKind.DISCRETE))
        return NetworkModel(
            name=NAME, source="models.sample_network", buses=tuple(self.buses), terminals=tuple(self.terminals),
            lines=tuple(self.lines), transformers=tuple(_regulating(self.transformers, self.taps)),
            tap_changers=tuple(self.taps), switches=switches, loads=tuple(self.loads), capacitors=(), ders=(),
            sources=tuple(self.sources), feeders=tuple(self.feeders), measurements=measurements,
            diagnostics=ModelDiagnostics({}, {}, ("generated by models.sample_network",)),
            _bus_by_cn={b.mrid: b.index for b in self.buses}, customers=tuple(self.customers),
            other_equipment=tuple(self.other))


def _regulating(transformers: list[Transformer], taps: list[TapChanger]) -> list[Transformer]:
    tapped = {t.transformer_mrid for t in taps}
    return [Transformer(t.mrid, t.name, t.vector_group, t.windings, t.tanks, t.mesh_impedances, t.magnetising_g_s,
                        t.magnetising_b_s, t.mrid in tapped, t.feeder_mrid) for t in transformers]


def _fuse_a(kva: int) -> float:
    """HV fuse link for a DT: about twice the rated primary current, rounded to a standard size."""
    rated = kva * 1e3 / (math.sqrt(3) * 11000.0)
    return float(next(size for size in (16, 20, 25, 32, 40, 50, 63, 80, 100) if size >= 2 * rated))


def _offset(lon: float, lat: float, east_km: float, north_km: float) -> tuple[float, float]:
    return round(lon + east_km / KM_PER_DEG_LON, 6), round(lat + north_km / KM_PER_DEG_LAT, 6)


def _distance_km(a: Bus, b: Bus) -> float:
    return math.hypot((a.x - b.x) * KM_PER_DEG_LON, (a.y - b.y) * KM_PER_DEG_LAT)


def build_sample_network() -> NetworkModel:
    """The sample network (deterministic: same model, same mRIDs, every call)."""
    return _Builder().build()


def export_sample(directory: str | Path, *, compressed: bool = False) -> Path:
    """Write the sample network as CIM100 RDF/XML to ``directory/sample_network.xml`` (``.xml.gz`` when compressed,
    as shipped in ``models/data``); returns the file's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if not compressed:
        return write_cim(build_sample_network(), out / SAMPLE_FILE_NAME)
    path = out / f"{SAMPLE_FILE_NAME}.gz"
    path.write_bytes(gzip.compress(to_rdf_xml(build_sample_network()), mtime=0))
    return path
