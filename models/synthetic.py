"""Synthetic station configurations of any size, for benchmarks and load tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def synthetic_station_toml(
    ports: Sequence[int],
    points_per_rtu: int,
    *,
    status_share: float = 0.1,
    grpc_address: str = "127.0.0.1:0",
    data_dir: str = "var/synthetic",
    max_updates_per_s: float = 2000.0,
    stale_analog_s: float = 300.0,
) -> str:
    """A station with one IEC 104 RTU per port, each with ``points_per_rtu`` points (breakers and analogs)."""
    n_status = int(round(points_per_rtu * status_share))
    out = [
        '[station]\nname = "synthetic"\n',
        f'[server]\ngrpc_address = "{grpc_address}"\ndata_dir = "{data_dir}"\ngrpc_workers = 16\n',
        f"[supervision]\nstale_after_s = {{ analog = {stale_analog_s}, double = 3600 }}\n",
        '[[operators]]\nname = "bench"\nrole = "operator"\ntoken = "bench-operator-token"\n',
    ]
    for r, port in enumerate(ports):
        out.append(
            f'[[rtus]]\nname = "RTU{r:03d}"\ncommon_address = {r + 1}\naddresses = ["127.0.0.1:{port}"]\n'
            f"gi_period_s = 3600\nmax_updates_per_s = {max_updates_per_s}\n"
        )
    for r in range(len(ports)):
        for i in range(points_per_rtu):
            if i < n_status:
                out.append(
                    f'[[points]]\nname = "RTU{r:03d}/CB{i:04d}"\nkind = "double"\nrtu = "RTU{r:03d}"\n'
                    f'address = {1000 + i}\ntype = "M_DP_TB_1"\nsim = {{ nominal = 2 }}\n'
                )
            else:
                out.append(
                    f'[[points]]\nname = "RTU{r:03d}/I{i:04d}"\nkind = "analog"\nrtu = "RTU{r:03d}"\n'
                    f'address = {100000 + i}\ntype = "M_ME_TF_1"\nunits = "A"\n'
                    f"sim = {{ nominal = 200, noise_pct = 1.0 }}\n"
                )
    return "\n".join(out)


#: Relative size (points) of one device of each protocol in a mixed fleet: substation RTUs and IEDs are large,
#: feeder RTUs half of it, meters small.
FLEET_WEIGHTS = {"iec104": 4, "dnp3": 2, "modbus": 1, "iec61850": 4}
#: What each protocol stands for in the fleet: (device name prefix, FRTU).
FLEET_ROLES = {"iec104": ("RTU", False), "dnp3": ("FRTU", True), "modbus": ("MTR", False), "iec61850": ("IED", False)}
_MMXU_OBJECTS = tuple(f"{do}.phs{ph}" for do in ("A", "PhV", "W", "VAr") for ph in "ABC")


def fleet_points_per_device(counts: Mapping[str, int], total_points: int) -> dict[str, int]:
    """Points of one device per protocol so that the fleet ``counts`` holds at least ``total_points``."""
    weight = sum(FLEET_WEIGHTS[p] * n for p, n in counts.items())
    if weight <= 0:
        raise ValueError("the fleet is empty: every protocol count is 0")
    unit = -(-total_points // weight)  # ceiling: never fewer points than asked for
    return {p: max(2, FLEET_WEIGHTS[p] * unit) for p, n in counts.items() if n > 0}


def mixed_fleet_station_toml(
    ports: Mapping[str, Sequence[int]],
    total_points: int,
    *,
    status_share: float = 0.2,
    grpc_address: str = "127.0.0.1:0",
    data_dir: str = "var/fleet",
    max_updates_per_s: float = 2000.0,
    modbus_scan_s: tuple[float, float] = (0.0, 0.0),
    dnp3_event_poll_s: float = 0.0,
    stale_s: float = 3600.0,
    adapter_heartbeat_timeout_s: float = 5.0,
) -> str:
    """A station of IEC 104 RTUs, DNP3 FRTUs, Modbus TCP meters and IEC 61850 IEDs, one per port in ``ports``
    (protocol name -> ports), with at least ``total_points`` points in total (see ``fleet_points_per_device``).

    Each device has a share ``status_share`` of digital points (breaker positions; meter status bits) and analogs
    otherwise (integer-valued in the simulator's load, so every encoding carries them exactly). Periodic GI/integrity
    and stale supervision are set long enough to stay out of a benchmark's way. ``modbus_scan_s``: (digital, analog)
    scan periods of the meters, ``dnp3_event_poll_s`` the FRTUs' event poll period; 0 derives them from the budgets."""
    unknown = set(ports) - set(FLEET_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {', '.join(sorted(unknown))} (expected: {', '.join(FLEET_WEIGHTS)})")
    per_device = fleet_points_per_device({p: len(v) for p, v in ports.items()}, total_points)
    out = [
        '[station]\nname = "mixed-fleet"\n',
        f'[server]\ngrpc_address = "{grpc_address}"\ndata_dir = "{data_dir}"\ngrpc_workers = 16\n',
        f"[supervision]\nstale_after_s = {{ analog = {stale_s}, double = {stale_s}, single = {stale_s} }}\n"
        f"adapter_heartbeat_timeout_s = {adapter_heartbeat_timeout_s}\n",
        '[[operators]]\nname = "bench"\nrole = "operator"\ntoken = "bench-operator-token"\n',
    ]
    points: list[str] = []
    for proto, proto_ports in ports.items():
        prefix, frtu = FLEET_ROLES[proto]
        n_points = per_device.get(proto, 0)
        n_status = max(1, int(round(n_points * status_share)))
        for r, port in enumerate(proto_ports):
            name = f"{prefix}{r:03d}"
            rtu = [f'[[rtus]]\nname = "{name}"\nprotocol = "{proto}"\naddresses = ["127.0.0.1:{port}"]',
                   f"gi_period_s = 3600\nmax_updates_per_s = {max_updates_per_s}\nfrtu = {str(frtu).lower()}"]
            if proto == "iec104":
                rtu.append(f"common_address = {r + 1}")
            elif proto == "dnp3":
                rtu.append(f"common_address = {r + 10}\ndnp3 = {{ master_address = 1, "
                           f"event_poll_period_s = {dnp3_event_poll_s} }}")
            elif proto == "modbus":
                rtu.append(f"common_address = {r % 247 + 1}\nmodbus = {{ digital_scan_s = {modbus_scan_s[0]}, "
                           f"analog_scan_s = {modbus_scan_s[1]} }}")
            out.append("\n".join(rtu) + "\n")
            for i in range(n_points):
                points.append(_fleet_point(proto, name, i, i < n_status, i - n_status))
    return "\n".join(out + points)


def _fleet_point(proto: str, rtu: str, i: int, status: bool, a: int) -> str:
    """One point of a fleet device: the ``i``-th overall, the ``a``-th analog when not ``status``."""
    head = f'[[points]]\nrtu = "{rtu}"\n'
    if status:
        kind, where = "double", {
            "iec104": f'address = {1000 + i}\ntype = "M_DP_TB_1"',
            "dnp3": f'address = {i}\ntype = "double_bit_binary_input"',
            "modbus": f'address = {i}\ntype = "discrete_input"',
            "iec61850": f'reference = "LD0/XCBR{i + 1}.Pos"\ntype = "DPS"',
        }[proto]
        if proto == "modbus":
            kind = "single"  # a meter's status bits
        name = f"{rtu}/CB{i:04d}" if kind == "double" else f"{rtu}/ST{i:04d}"
        sim = "sim = { nominal = 2 }" if kind == "double" else "sim = { nominal = 0 }"
        return f'{head}name = "{name}"\nkind = "{kind}"\n{where}\n{sim}\n'
    where = {
        "iec104": f'address = {100000 + a}\ntype = "M_ME_TF_1"',
        "dnp3": f'address = {a}\ntype = "analog_input"',
        "modbus": f'address = {2 * a}\ntype = "input_float32"',
        "iec61850": f'reference = "LD0/MMXU{a // len(_MMXU_OBJECTS) + 1}.{_MMXU_OBJECTS[a % len(_MMXU_OBJECTS)]}"\n'
                    f'type = "CMV"',
    }[proto]
    return f'{head}name = "{rtu}/M{a:04d}"\nkind = "analog"\n{where}\nunits = "A"\nsim = {{ nominal = 200 }}\n'
