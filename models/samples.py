"""Embedded sample data shipped with the package."""

from importlib.resources import files
from pathlib import Path

from models.config import StationConfig, load_station_config


def sample_station_path() -> Path:
    return Path(str(files("models") / "data" / "sample_station.toml"))


def load_sample_station() -> StationConfig:
    return load_station_config(sample_station_path())
