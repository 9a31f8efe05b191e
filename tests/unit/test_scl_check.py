"""The load-time SCL check (models.config: every point of an IEC 61850 RTU with ``iec61850.scl`` must find its
objects, of a fitting class, in the file) and ``dscada model export-scl``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.config import load_station_config
from models.errors import ConfigError
from models.model_cli import main as model_main
from models.scl import load_scl, parse_scl

# A small hand-written ICD in the shape tools write (2003 namespace, private elements, types after the IED)
ICD = """<?xml version="1.0" encoding="UTF-8"?>
<SCL xmlns="http://www.iec.ch/61850/2003/SCL" xmlns:v="urn:vendor" version="2007" revision="B">
  <Header id="PROT1"/>
  <v:Private>ignored</v:Private>
  <IED name="PROT1" manufacturer="test">
    <AccessPoint name="S1">
      <Server>
        <Authentication/>
        <LDevice inst="PROT">
          <LN0 lnClass="LLN0" inst="" lnType="LLN0_T"/>
          <LN lnClass="XCBR" inst="1" lnType="XCBR_T"/>
          <LN prefix="Q0" lnClass="XSWI" inst="1" lnType="XSWI_T"/>
          <LN lnClass="MMXU" inst="1" lnType="MMXU_T"/>
          <LN lnClass="GGIO" inst="1" lnType="GGIO_T"/>
        </LDevice>
      </Server>
    </AccessPoint>
  </IED>
  <DataTypeTemplates>
    <LNodeType id="LLN0_T" lnClass="LLN0"/>
    <LNodeType id="XCBR_T" lnClass="XCBR"><DO name="Pos" type="DPC_SBOW"/></LNodeType>
    <LNodeType id="XSWI_T" lnClass="XSWI"><DO name="Pos" type="DPS_T"/></LNodeType>
    <LNodeType id="MMXU_T" lnClass="MMXU"><DO name="TotW" type="MV_T"/></LNodeType>
    <LNodeType id="GGIO_T" lnClass="GGIO"><DO name="Ind1" type="SPS_T"/></LNodeType>
    <DOType id="DPC_SBOW" cdc="DPC">
      <DA name="stVal" bType="Dbpos" fc="ST" dchg="true"/>
      <DA name="q" bType="Quality" fc="ST" qchg="true"/>
      <DA name="t" bType="Timestamp" fc="ST"/>
      <DA name="ctlModel" bType="Enum" fc="CF" type="CtlModels"><Val>sbo-with-enhanced-security</Val></DA>
    </DOType>
    <DOType id="DPS_T" cdc="DPS">
      <DA name="stVal" bType="Dbpos" fc="ST" dchg="true"/>
      <DA name="q" bType="Quality" fc="ST" qchg="true"/>
      <DA name="t" bType="Timestamp" fc="ST"/>
    </DOType>
    <DOType id="MV_T" cdc="MV">
      <DA name="mag" bType="Struct" fc="MX" type="AV" dchg="true"/>
      <DA name="q" bType="Quality" fc="MX" qchg="true"/>
    </DOType>
    <DOType id="SPS_T" cdc="SPS">
      <DA name="stVal" bType="BOOLEAN" fc="ST" dchg="true"/>
      <DA name="q" bType="Quality" fc="ST" qchg="true"/>
      <DA name="t" bType="Timestamp" fc="ST"/>
    </DOType>
    <DAType id="AV"><BDA name="f" bType="FLOAT32"/></DAType>
    <EnumType id="CtlModels"><EnumVal ord="0">status-only</EnumVal></EnumType>
  </DataTypeTemplates>
</SCL>
"""

GOOD_POINTS = """
[[points]]
name = "CB"
kind = "double"
rtu = "PROT-1"
type = "DPC"
reference = "PROT/XCBR1.Pos"
control = { type = "double", mode = "sbo_enhanced", reference = "PROT/XCBR1.Pos" }

[[points]]
name = "DS"
kind = "double"
rtu = "PROT-1"
type = "DPS"
reference = "PROT/Q0XSWI1.Pos"

[[points]]
name = "TRIP"
kind = "single"
rtu = "PROT-1"
type = "SPS"
reference = "PROT/GGIO1.Ind1"
"""


def station(tmp_path: Path, points: str, *, scl: str = "prot1.icd", icd: str = ICD) -> Path:
    (tmp_path / "prot1.icd").write_text(icd, encoding="utf-8")
    path = tmp_path / "station.toml"
    path.write_text(f"""
[station]
name = "scl check"

[[rtus]]
name = "PROT-1"
protocol = "iec61850"
addresses = ["127.0.0.1:10102"]
iec61850 = {{ ied_name = "PROT1", scl = "{scl}" }}
{points}""", encoding="utf-8")
    return path


def test_points_found_in_the_icd_load(tmp_path: Path) -> None:
    cfg = load_station_config(station(tmp_path, GOOD_POINTS))
    assert Path(cfg.rtus[0].iec61850.scl) == tmp_path / "prot1.icd"  # relative to the configuration file
    assert [p.name for p in cfg.points] == ["CB", "DS", "TRIP"]


@pytest.mark.parametrize(("change", "problem"), [
    (("PROT/GGIO1.Ind1", "PROT/GGIO1.Ind2"), r"point 'TRIP'.*GGIO1 has no data object 'Ind2'"),
    (("PROT/GGIO1.Ind1", "PROT/GGIO2.Ind1"), r"point 'TRIP'.*no logical node 'GGIO2' in PROT"),
    (("PROT/GGIO1.Ind1", "LD0/GGIO1.Ind1"), r"point 'TRIP'.*no logical device 'LD0'"),
    (("PROT/GGIO1.Ind1", "PROT/GGIO1.Ind1.stVal"), r"point 'TRIP'.*names the attribute 'stVal', not a data object"),
    # a class that does not fit the point's type
    (('type = "DPS"', 'type = "DPC"'), r"point 'DS'.*PROT/Q0XSWI1.Pos is a DPS \(DPS_T\); a DPC point needs DPC"),
    # a control on an object that is not controllable
    (('reference = "PROT/Q0XSWI1.Pos"', 'reference = "PROT/Q0XSWI1.Pos"\ncontrol = { type = "double", mode = "sbo", '
                                        'reference = "PROT/Q0XSWI1.Pos" }'),
     r"point 'DS'.*PROT/Q0XSWI1.Pos is a DPS \(DPS_T\); a double control needs DPC"),
    # the control model the file declares is not the one configured
    (('mode = "sbo_enhanced"', 'mode = "direct"'),
     r"point 'CB'.*ctlModel sbo-with-enhanced-security, which a direct control cannot drive"),
])
def test_mismatch_names_file_rtu_and_point(tmp_path: Path, change: tuple[str, str], problem: str) -> None:
    assert change[0] in GOOD_POINTS
    path = station(tmp_path, GOOD_POINTS.replace(*change))
    with pytest.raises(ConfigError, match=problem) as err:
        load_station_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}:")  # the configuration file and the RTU's line
    assert "rtus[0].iec61850.scl" in text and "RTU 'PROT-1'" in text
    assert str(tmp_path / "prot1.icd") in text  # the SCL file


def test_value_attributes_the_client_reads_must_exist(tmp_path: Path) -> None:
    points = GOOD_POINTS + """
[[points]]
name = "P"
kind = "analog"
rtu = "PROT-1"
type = "MV"
reference = "PROT/MMXU1.TotW"
"""
    with pytest.raises(ConfigError, match=r"point 'P'.*PROT/MMXU1.TotW \(MV_T\) has no t with FC MX"):
        load_station_config(station(tmp_path, points))
    fixed = ICD.replace('<DA name="q" bType="Quality" fc="MX" qchg="true"/>',
                        '<DA name="q" bType="Quality" fc="MX" qchg="true"/><DA name="t" bType="Timestamp" fc="MX"/>')
    assert len(load_station_config(station(tmp_path, points, icd=fixed)).points) == 4


def test_missing_or_broken_scl_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rtus\[0\].iec61850.scl: .*nope.icd: cannot read SCL file"):
        load_station_config(station(tmp_path, GOOD_POINTS, scl="nope.icd"))
    with pytest.raises(ConfigError, match=r"prot1.icd:\d+: not well-formed XML"):
        load_station_config(station(tmp_path, GOOD_POINTS, icd=ICD[:-20]))
    with pytest.raises(ConfigError, match=r"no IED named 'PROT1' \(the file has: OTHER\)"):
        load_station_config(station(tmp_path, GOOD_POINTS, icd=ICD.replace('IED name="PROT1"', 'IED name="OTHER"')))


# ------------------------------------------------------------------------------------------------ export-scl

GENERATED = """
[station]
name = "export"

[[rtus]]
name = "RTU-104"
addresses = ["127.0.0.1:2404"]
common_address = 1

[[rtus]]
name = "FDR-7"
protocol = "iec61850"
addresses = ["127.0.0.1:10102"]
gi_period_s = 300

[[points]]
name = "CB7"
kind = "double"
rtu = "FDR-7"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = { type = "double", mode = "sbo", reference = "LD0/XCBR1.Pos" }

[[points]]
name = "IA7"
kind = "analog"
rtu = "FDR-7"
type = "CMV"
reference = "LD0/MMXU1.A.phsA"

[[points]]
name = "SP7"
kind = "setpoint"
rtu = "FDR-7"
type = "APC"
reference = "LD0/ATCC1.BndCtr"
control = { type = "setpoint_float", mode = "direct", reference = "LD0/ATCC1.BndCtr" }
"""


def test_export_scl_generated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "station.toml"
    conf.write_text(GENERATED, encoding="utf-8")
    out = tmp_path / "FDR7.cid"
    assert model_main(["export-scl", str(conf), "FDR-7", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file"] == str(out) and info["ied"] == "FDR7"
    assert (info["logical_devices"], info["logical_nodes"], info["data_sets"], info["report_controls"]) == (1, 4, 2, 4)
    doc = load_scl(out)
    ied = doc.ied("FDR7")
    assert doc.resolve(ied, "LD0/XCBR1.Pos").do_type.ctl_model().value == "sbo-with-normal-security"
    assert doc.resolve(ied, "LD0/ATCC1.BndCtr").do_type.cdc == "APC"
    assert {rc.intg_pd_ms for _, _, rc in doc.report_controls(ied)} == {300_000}  # gi_period_s
    # the exported file is a valid iec61850.scl for the same station: the load-time check accepts it
    conf.write_text(GENERATED.replace('gi_period_s = 300', 'gi_period_s = 300\niec61850 = { scl = "FDR7.cid" }'),
                    encoding="utf-8")
    cfg = load_station_config(conf)
    assert cfg.rtu("FDR-7").iec61850.scl == str(out)


def test_export_scl_given_file_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = station(tmp_path, GOOD_POINTS)
    out = tmp_path / "copy.cid"
    assert model_main(["export-scl", str(conf), "PROT-1", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(out)
    assert load_scl(out).ieds == parse_scl(ICD).ieds  # the given file's IED, rewritten
    conf2 = tmp_path / "other.toml"
    conf2.write_text(GENERATED, encoding="utf-8")
    assert model_main(["export-scl", str(conf2), "RTU-104", str(tmp_path / "x.cid")]) == 2
    assert "speaks iec104, not iec61850" in capsys.readouterr().err
    assert model_main(["export-scl", str(conf2), "NOPE", str(tmp_path / "x.cid")]) == 2
    assert "no RTU named 'NOPE'" in capsys.readouterr().err
    assert model_main(["export-scl", str(conf2), "FDR-7", str(tmp_path / "missing" / "x.cid")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert not (tmp_path / "x.cid").exists()
