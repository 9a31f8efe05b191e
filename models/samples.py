"""Embedded sample data shipped with the package."""

from __future__ import annotations

import re
import socket
from importlib.resources import files
from pathlib import Path

from models.config import StationConfig, load_station_config


def sample_station_path() -> Path:
    return Path(str(files("models") / "data" / "sample_station.toml"))


def sample_network_station_path() -> Path:
    """The station of the embedded CIM sample network (``sample_network.xml.gz``): points from its measurements."""
    return Path(str(files("models") / "data" / "sample_network_station.toml"))


def load_sample_station() -> StationConfig:
    return load_station_config(sample_station_path())


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: all bound at once, so the OS cannot hand one out twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def relocate_station_text(text: str, data_dir: str | Path, config_dir: str | Path | None = None) -> str:
    """The same station on free loopback ports with its stores under ``data_dir`` (demo and test runs side by side
    with a production server on the default ports). A relative ``[network] cim`` path is made absolute against
    ``config_dir``, the folder the text came from, so the copy still finds its CIM model."""
    if config_dir is not None:
        base = Path(config_dir).resolve()
        text = re.sub(r'(?m)^cim = "(.*)"$', lambda m: f'cim = "{(base / m.group(1)).as_posix()}"', text)
    originals = sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)))
    fresh = [str(p) for p in free_tcp_ports(2 * len(originals)) if str(p) not in originals]
    mapping = dict(zip(originals, fresh, strict=False))  # distinct new ports, replaced in one pass
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[m.group(1)]}", text)
    return re.sub(r'(?m)^data_dir = ".*"$', f'data_dir = "{Path(data_dir).as_posix()}"', text)
