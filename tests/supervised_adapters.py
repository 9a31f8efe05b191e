"""Adapters that misbehave on purpose, for the supervisor tests (run in spawned child processes)."""

import os
import time

from frontend_protocols.channel import AdapterChannel, Heartbeat, Shutdown
from models.config import StationConfig
from models.updates import LinkEvent


def _beat(channel: AdapterChannel, adapter: str) -> None:
    channel.send(Heartbeat(adapter, int(time.time() * 1000), (("pid", float(os.getpid())),)))


def crash_soon(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    for rtu in rtus:
        channel.send(LinkEvent(adapter, rtu, True, address="x"))
    _beat(channel, adapter)
    time.sleep(0.3)
    os._exit(3)  # a crash of the protocol library


def hang_soon(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    _beat(channel, adapter)
    time.sleep(3600)  # a deadlock: no more heartbeats


def well_behaved(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    while True:
        _beat(channel, adapter)
        msg = channel.recv(0.2)
        if isinstance(msg, Shutdown):
            return
