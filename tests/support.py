"""Helpers shared by the tests: free loopback ports and the sample station re-addressed onto them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from models.config import StationConfig, load_station_config
from models.samples import free_tcp_port, relocate_station_text, sample_station_path

free_port = free_tcp_port


def sample_config_on_free_ports(tmp_path: Path, *, extra: str = "", replace: dict[str, str] | None = None
                                ) -> tuple[StationConfig, Path]:
    """The embedded sample station with every port moved to a free one, written to tmp_path."""
    text = relocate_station_text(sample_station_path().read_text(encoding="utf-8"), tmp_path / "data")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "station.toml"
    path.write_text(text + extra, encoding="utf-8")
    return load_station_config(path), path


def wait_for(pred: Callable[[], object], timeout_s: float, what: str, period_s: float = 0.05) -> object:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(period_s)
