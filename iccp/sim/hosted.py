"""The transmission simulator of one ``[[iccp.remotes]]`` entry of a station, built from the station file alone:
the ``dscada iccp-sim`` command and the station's RTU simulator host (``rtu_sim.simulator``) both use it.

What the station says (see ``iccp.sim.server.sim_iccp_config``) plus two things a single-machine setup wants:
the DR snapshot files go to the remote's ``dr_directory`` (the folder the distribution centre recovers gaps from:
FTP/rsync in production, the same folder here), and when the station publishes points to this remote's identity
(an ``[[iccp.peers]]`` entry and ``[iccp] listen`` on a fixed port) the simulator also imports them
(``DistributionImport``).
"""

from __future__ import annotations

import re
from pathlib import Path

from iccp.sim.distribution_import import DistributionImport
from iccp.sim.server import SimSettings, TransmissionSimulator, choose_remote, sim_iccp_config
from iccp.sim.transmission import TieFlows, TransmissionConfig, TransmissionSystem, ties_from_network
from models.config import StationConfig
from models.protocols.iccp import point_type_name

__all__ = ["station_transmission_simulator"]

_LISTEN_RE = re.compile(r"([A-Za-z0-9_.\-]+):(\d{1,5})")


def station_transmission_simulator(station: StationConfig, remote: str | None = None, *, listen: str | None = None,
                                   seed: int = 0, period_s: float = 1.0, snapshots_dir: str | Path | None = None,
                                   snapshot_interval_s: float = 60.0, import_distribution: bool = True,
                                   tie_flows: TieFlows | None = None) -> TransmissionSimulator:
    """The simulator playing ``remote`` (by name, or the station's only remote); not started.

    ``snapshots_dir`` None: the remote's ``dr_directory`` (no files when that is unset too). With a network model
    the ties are its grid sources (``ties_from_network``: one per EnergySource, sized by the load it supplies), and
    ``tie_flows`` (a power flow of that model, e.g. ``GridPhysics.source_injections``) makes their flows the ones the
    distribution side draws.
    """
    from iccp.sim.server import SimulatorError

    if station.iccp is None:
        raise SimulatorError(f"{station.source_path}: the station has no [iccp] block")
    rc = choose_remote(station.iccp, remote)
    transmission = (TransmissionConfig(ties=ties_from_network(station.network)) if station.network is not None
                    else None)
    probe = TransmissionSystem(transmission, seed=seed)  # the point list the bilateral table publishes
    types = {p.source.reference: point_type_name(p) for p in station.points_of_rtu(rc.name)}
    sim_cfg = sim_iccp_config(station.iccp, probe, remote=rc.name, listen=listen, imported_types=types)
    m = _LISTEN_RE.fullmatch(sim_cfg.listen or "")
    if m is None or not 0 <= int(m.group(2)) <= 65535:
        raise SimulatorError(f"listen address {sim_cfg.listen!r} of {rc.name!r} is not HOST:PORT")
    folder = snapshots_dir if snapshots_dir is not None else rc.dr_directory
    settings = SimSettings(host=m.group(1), port=int(m.group(2)), seed=seed, period_s=period_s,
                           snapshots_dir=Path(folder) if folder is not None else None,
                           snapshot_interval_s=snapshot_interval_s)
    sim = TransmissionSimulator(sim_cfg, settings, transmission=transmission, tie_flows=tie_flows,
                                source_name=re.sub(r"[^A-Za-z0-9_-]", "_", rc.name))
    table = station.iccp.peer(rc.identity)
    listen = station.iccp.listen
    # "host:0" (any free port) names no address another process can reach: nothing to import from
    if (import_distribution and listen is not None and not listen.endswith(":0") and table is not None
            and table.points):
        sim.attach_import(DistributionImport(station, rc))
    return sim
