"""Synthetic station configurations of any size, for benchmarks and load tests."""

from __future__ import annotations

from collections.abc import Sequence


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
