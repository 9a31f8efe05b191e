"""``dscada se FILE --measurements CSV``: a three-phase estimate of IEEE 13 from a measurement file written from the
project's own flow (feeder-head and regulator P/Q/I, bus voltages, a few load meters), with a gross error that the
bad-data report names; malformed files fail with exit 2 naming file and line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import IEEE13, requires_reference_feeders

from dms.network_state import NetworkState
from models.cim import load_cim
from models.three_phase_flow import run_three_phase_powerflow

pytestmark = requires_reference_feeders()
REPO = Path(__file__).resolve().parents[2]
BAD = "p_kw 650632 1 B"


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    model = load_cim(IEEE13)
    flow = run_three_phase_powerflow(NetworkState.from_model(model).model)
    rows = []
    for n in flow.nodes:
        if str(n["phase"]) in ("A", "B", "C") and n["energised"]:
            rows.append(("v_kv", str(n["bus"]), "", str(n["phase"]), float(n["v_v"]) / 1e3, ""))
    for b in flow.branches:
        if str(b["element"]) in ("650632", "Reg", "632670", "632633") and str(b["phase"]) in ("A", "B", "C"):
            for kind, value in (("p_kw", b["p_w"] / 1e3), ("q_kvar", b["q_var"] / 1e3), ("i_a", b["i_a"])):
                v = float(value) * (1.6 if f"{kind} {b['element']} {b['terminal']} {b['phase']}" == BAD else 1.0)
                rows.append((kind, str(b["element"]), str(int(b["terminal"])), str(b["phase"]), v, ""))
    path = tmp_path_factory.mktemp("se_cli") / "ieee13.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "element", "terminal", "phase", "value", "sigma"])
        w.writerows(rows)
    truth = {str(n["node"]): float(n["v_pu"]) for n in flow.nodes}
    return path, truth


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scada.cli", "se", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_estimate_of_a_file_names_the_bad_measurement(csv_file: tuple[Path, dict[str, float]]) -> None:
    path, truth = csv_file
    out = _run(str(IEEE13), "--measurements", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["converged"] and not data["unobservable_buses"]
    assert [b["measurement"] for b in data["bad_data"]] == [BAD]
    assert data["bad_data"][0]["normalized_residual"] > 5
    errors = {n["node"]: abs(n["v_pu"] - truth[n["node"]]) for n in data["nodes"]}
    # Pseudo loads (the model's, scaled to the meters) and 0.5 % meters; the split-phase house legs behind the
    # pole-top transformer carry no measurement at all.
    assert max(e for node, e in errors.items() if not node.startswith("HOUSE")) < 0.002
    assert max(errors.values()) < 0.01
    text = _run(str(IEEE13), "--measurements", str(path))
    assert text.returncode == 0 and "bad data (removed):" in text.stdout and BAD in text.stdout


def test_a_malformed_file_fails_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("kind,element,terminal,phase,value,sigma\nv_kv,650,,A,2.4,\nv_kv,nosuchbus,,A,2.4,\n")
    out = _run(str(IEEE13), "--measurements", str(path))
    assert out.returncode == 2
    assert f"{path}:3: no bus 'nosuchbus'" in out.stderr
    missing = _run(str(IEEE13), "--measurements", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_the_balanced_estimate_of_a_pandapower_network(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandapower as pp
        import pandapower.networks as pn

        net = pn.case33bw()
        pp.runpp(net)
    model = tmp_path / "case33.json"
    pp.to_json(net, str(model))
    rows = [("v_kv", f"bus {b}", "", "", net.res_bus.vm_pu.at[b] * net.bus.vn_kv.at[b], "") for b in net.bus.index]
    for i in net.line.index[:5]:
        factor = 3.0 if i == 2 else 1.0  # a gross error on line 2's P
        rows += [("p_kw", f"line {i}", "1", "", net.res_line.p_from_mw.at[i] * 1e3 * factor, ""),
                 ("q_kvar", f"line {i}", "1", "", net.res_line.q_from_mvar.at[i] * 1e3, "")]
    for b in net.load.bus.unique():
        p = -net.load.p_mw[net.load.bus == b].sum() * 1e3
        q = -net.load.q_mvar[net.load.bus == b].sum() * 1e3
        rows += [("p_kw", f"bus {b}", "", "", p, abs(p) * 0.05 + 1),
                 ("q_kvar", f"bus {b}", "", "", q, abs(q) * 0.05 + 1)]
    path = tmp_path / "case33.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "element", "terminal", "phase", "value", "sigma"])
        w.writerows(rows)
    out = _run(str(model), "--measurements", str(path), "--balanced", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [b["measurement"].split(" (")[0] for b in data["bad_data"]] == ["P_FLOW line 2 from"]
    assert data["chi2_passed"]
    truth = net.res_bus.vm_pu.to_numpy()
    assert max(abs(b["v_pu"] - t) for b, t in zip(data["buses"], truth, strict=True)) < 1e-3
