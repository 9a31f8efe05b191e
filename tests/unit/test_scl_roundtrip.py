"""SCL: generate from points, write, parse back identical; errors name the file and the line."""

from __future__ import annotations

import pytest

from models.config import parse_station_config
from models.scl import SclError, check_points_in_scl, generate_scl, parse_scl, scl_for_rtu, write_scl

TOML = """
[station]
name = "scl"
[[rtus]]
name = "IED-1"
protocol = "iec61850"
addresses = ["127.0.0.1:10201"]
[[points]]
name = "CB"
kind = "double"
rtu = "IED-1"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = { type = "double", mode = "sbo_enhanced", reference = "LD0/XCBR1.Pos" }
[[points]]
name = "IA"
kind = "analog"
rtu = "IED-1"
type = "CMV"
reference = "LD0/MMXU1.A.phsA"
[[points]]
name = "E"
kind = "counter"
rtu = "IED-1"
type = "BCR"
reference = "LD0/MMTR1.TotWh"
"""


def test_generate_write_parse_round_trip() -> None:
    cfg = parse_station_config(TOML)
    doc = scl_for_rtu(cfg, cfg.rtus[0])
    back = parse_scl(write_scl(doc), "gen.cid")
    assert back.ieds == doc.ieds and back.do_types == doc.do_types and back.lnode_types == doc.lnode_types
    assert back.da_types == doc.da_types and back.enum_types == doc.enum_types
    ied = back.ied("IED1")
    assert back.resolve(ied, "LD0/XCBR1.Pos").do_type.ctl_model().value == "sbo-with-enhanced-security"
    assert back.resolve(ied, "LD0/MMXU1.A.phsA").do_type.cdc == "CMV"
    (_, _, status), (_, _, meas) = back.datasets(ied)
    assert [f.reference for f in status.fcdas] == ["LD0/XCBR1.Pos", "LD0/MMTR1.TotWh"]
    assert [f.reference for f in meas.fcdas] == ["LD0/MMXU1.A.phsA"]
    assert {(rc.name, rc.buffered) for _, _, rc in back.report_controls(ied)} == {
        ("brcbStatus", True), ("urcbStatus", False), ("brcbMeasurements", True), ("urcbMeasurements", False)}
    check_points_in_scl(cfg, cfg.rtus[0], back)


def test_errors_name_file_and_line() -> None:
    cfg = parse_station_config(TOML)
    text = write_scl(scl_for_rtu(cfg, cfg.rtus[0]))
    bad = text.replace('type="CMV"', 'type="NOPE"', 1)
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if 'type="NOPE"' in t)
    with pytest.raises(SclError, match=rf"ied.cid:{line}: .*DOType 'NOPE' is not defined"):
        parse_scl(bad, "ied.cid")
    with pytest.raises(SclError, match=r"broken.cid:3: not well-formed"):
        parse_scl("<SCL>\n<IED name='x'>\n</SCL>", "broken.cid")
    doc = parse_scl(text, "ied.cid")
    with pytest.raises(SclError, match=r"no data object 'Nope'"):
        doc.resolve(doc.ied("IED1"), "LD0/XCBR1.Nope")


def test_generator_refuses_shapes_it_cannot_make() -> None:
    cfg = parse_station_config(TOML.replace("LD0/MMXU1.A.phsA", "LD0/MMXU1.A.phsZ"))
    with pytest.raises(SclError, match=r"point 'IA'.*phsZ"):
        generate_scl("IED1", cfg.points)
