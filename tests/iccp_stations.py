"""Station TOML shared by the ICCP tests (imported as ``iccp_stations``, like ``support``): a field RTU with a
breaker and a feeder flow, the operator our TASE.2 peer's commands are audited as, and the peer itself."""

from __future__ import annotations

__all__ = ["OUR_AP_TITLE", "TSO_AP_TITLE", "field_station", "tso_peer", "tso_remote"]

OUR_AP_TITLE = ((1, 3, 9999, 10), 10)  # the distribution centre: [iccp] ap_title / ae_qualifier
TSO_AP_TITLE = ((1, 3, 9999, 20), 20)  # the transmission centre: peer of our server, remote of our client


def field_station(name: str, *, rtu_port: int = 2404, analog_type: str = "M_ME_NC_1") -> str:
    """``[station]``, operator ``iccp-tso``, IEC 104 RTU ``R1`` on ``rtu_port`` with ``CB1`` (double, controllable)
    and ``F1-P`` (analog of ``analog_type``); points[0] and points[1] of the station."""
    return f"""
[station]
name = "{name}"

[[operators]]
name = "iccp-tso"
role = "operator"
token = "iccp-tso-token"

[[rtus]]
name = "R1"
common_address = 1
addresses = ["127.0.0.1:{rtu_port}"]

[[points]]
name = "CB1"
kind = "double"
rtu = "R1"
address = 100
type = "M_DP_TB_1"
control = {{ type = "double", address = 200 }}

[[points]]
name = "F1-P"
kind = "analog"
rtu = "R1"
address = 101
type = "{analog_type}"
"""


def tso_peer(port: int = 0) -> str:
    """``[iccp]``: our server on 127.0.0.1:``port`` (0: any free port) and the peer "TSO" (bilateral table BLT_1,
    domain DSO1), which reads F1-P as F1_P and CB1 as CB1_STATE and operates CB1 as device CB1_CTL; needs
    :func:`field_station` before it."""
    return f"""
[iccp]
ap_title = "1.3.9999.10"
ae_qualifier = 10
listen = "127.0.0.1:{port}"

[[iccp.peers]]
name = "TSO"
ap_title = "1.3.9999.20"
ae_qualifier = 20
bilateral_table_id = "BLT_1"
domain = "DSO1"
operator = "iccp-tso"
read = [{{ point = "F1-P", name = "F1_P", type = "Data_RealQTimeTag" }},
        {{ point = "CB1", name = "CB1_STATE", type = "Data_StateQ" }}]
devices = [{{ point = "CB1", name = "CB1_CTL" }}]
"""


def tso_remote(port: int = 10202, *, extra: str = "") -> str:
    """``[[iccp.remotes]]`` "TSO-ICCP" at 127.0.0.1:``port`` (the transmission centre of :func:`tso_peer`: table
    BLT_1, domain DSO1, DR files in ``dr/tso``; ``extra``: more keys of that table) importing the grid frequency as
    ``TSO.FREQ`` and tie breaker 1 as ``TSO.CB_T1``."""
    return f"""
[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:{port}"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "DSO1"
bilateral_table_id = "BLT_1"
{extra}dr_directory = "dr/tso"

[[points]]
name = "TSO.FREQ"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"
units = "Hz"

[[points]]
name = "TSO.CB_T1"
kind = "double"
rtu = "TSO-ICCP"
reference = "CB_T1_STATE"
"""
