"""The ``[iccp]`` configuration lives in ``models`` (models never imports iccp), and its timing keys:
``[[iccp.remotes]] keepalive_s / recovery_retry_s`` and ``[[iccp.peers]] select_timeout_s``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import parse_station_config
from models.errors import ConfigError
from models.iccp_config import DEFAULT_KEEPALIVE_S, DEFAULT_RECOVERY_RETRY_S, DEFAULT_SELECT_TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from iccp_stations import field_station, tso_peer, tso_remote  # noqa: E402

STATION = field_station("t") + tso_peer() + tso_remote()


def _load(text: str = STATION):
    return parse_station_config(text, "station.toml")


def _replace(old: str, new: str) -> str:
    assert STATION.count(old) == 1, old
    return STATION.replace(old, new)


def test_models_never_imports_iccp_at_runtime(tmp_path: Path) -> None:
    """Loading a station with [iccp] in a fresh interpreter leaves every iccp module (and the MMS library) unloaded."""
    station = tmp_path / "station.toml"
    station.write_text(STATION, encoding="utf-8")
    script = (
        "import json, sys\n"
        "from models.config import load_station_config\n"
        f"cfg = load_station_config({str(station)!r})\n"
        "assert cfg.iccp is not None and cfg.iccp.peers and cfg.iccp.remotes\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('iccp', 'open61850'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_models_source_imports_iccp() -> None:
    """Also the imports that do not run on the path above (deferred, TYPE_CHECKING)."""
    offenders = []
    for path in sorted((REPO / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("iccp", "open61850")]
    assert offenders == []


def test_iccp_re_exports_the_moved_types() -> None:
    """iccp.tase2 keeps its names: the configuration types are the very same objects."""
    import iccp.tase2.bilateral as bilateral
    import iccp.tase2.model as model
    import models.iccp_config as config
    import models.protocols.iccp as proto

    for name in ("PointType", "FlagsLayout", "StateEncoding", "Scope", "ControlKind"):
        assert getattr(model, name) is getattr(proto, name)
    assert model.DeviceDef is config.DeviceDef
    for name in ("ApTitle", "PeerIdentity", "TransferSetLimits", "BilateralTable", "BilateralPoint",
                 "BilateralDevice", "Operation", "BilateralTableError"):
        assert getattr(bilateral, name) is getattr(config, name)


def test_timing_keys_default_to_the_former_code_defaults() -> None:
    ic = _load().iccp
    assert ic is not None
    (remote,) = ic.remotes
    assert (remote.keepalive_s, remote.recovery_retry_s) == (DEFAULT_KEEPALIVE_S, DEFAULT_RECOVERY_RETRY_S) \
        == (5.0, 30.0)
    assert ic.peers[0].select_timeout_s == DEFAULT_SELECT_TIMEOUT_S == 30.0


def test_timing_keys_are_read() -> None:
    text = _replace('bilateral_table_id = "BLT_1"\ndr_directory',
                    'bilateral_table_id = "BLT_1"\nkeepalive_s = 2.5\nrecovery_retry_s = 12\ndr_directory')
    text = text.replace('operator = "iccp-tso"\n', 'operator = "iccp-tso"\nselect_timeout_s = 7.5\n', 1)
    ic = _load(text).iccp
    assert ic is not None
    assert (ic.remotes[0].keepalive_s, ic.remotes[0].recovery_retry_s) == (2.5, 12.0)
    assert ic.peers[0].select_timeout_s == 7.5


@pytest.mark.parametrize(("old", "new", "message"), [
    ('dr_directory = "dr/tso"', 'dr_directory = "dr/tso"\nkeepalive_s = 0',
     r"station.toml:\d+: iccp.remotes\[0\] \(TSO-ICCP\).keepalive_s: must be > 0, got 0"),
    ('dr_directory = "dr/tso"', 'dr_directory = "dr/tso"\nkeepalive_s = "5"',
     r"iccp.remotes\[0\] \(TSO-ICCP\).keepalive_s: expected float, got str '5'"),
    ('dr_directory = "dr/tso"', 'dr_directory = "dr/tso"\nrecovery_retry_s = -1',
     r"station.toml:\d+: iccp.remotes\[0\] \(TSO-ICCP\).recovery_retry_s: must be > 0, got -1"),
    ('operator = "iccp-tso"', 'operator = "iccp-tso"\nselect_timeout_s = 0',
     r"station.toml:\d+: iccp.peers\[0\] \(TSO\).select_timeout_s: must be > 0, got 0"),
    ('operator = "iccp-tso"', 'operator = "iccp-tso"\nselect_timeout_s = true',
     r"iccp.peers\[0\] \(TSO\).select_timeout_s: expected float, got a boolean"),
])
def test_timing_key_errors_name_file_line_and_field(old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(_replace(old, new))


def test_bilateral_table_refuses_a_non_positive_select_timeout() -> None:
    from models.iccp_config import ApTitle, BilateralTable, BilateralTableError, PeerIdentity

    with pytest.raises(BilateralTableError, match=r"bilateral table of 'TSO': select_timeout_s must be > 0"):
        BilateralTable("TSO", "BLT_1", PeerIdentity(ApTitle.parse("1.3.9999.20"), 20), "DSO1", select_timeout_s=0)
