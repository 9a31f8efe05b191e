"""PNG figures of the demo: the network map coloured by the live topology, and the feeder voltage profiles.

matplotlib with the Agg backend (no display needed); each function writes one file and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen before pyplot is imported

from models.network import NetworkModel  # noqa: E402

_FEEDER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan", "tab:olive")


def network_map_png(model: NetworkModel, bus_feeder: Mapping[int, str | None], switch_closed: Mapping[str, bool],
                    path: Path, title: str) -> Path:
    """Lines and switches drawn between bus coordinates; energized parts in the colour of the feeder that feeds
    them, dead parts grey and dashed, open switches as hollow squares."""
    feeders = sorted({f for f in bus_feeder.values() if f})
    colour = {f: _FEEDER_COLOURS[i % len(_FEEDER_COLOURS)] for i, f in enumerate(feeders)}
    fig, ax = plt.subplots(figsize=(10, 8))

    def xy(bus: int) -> tuple[float, float] | None:
        b = model.buses[bus]
        return None if math.isnan(b.x) or math.isnan(b.y) else (b.x, b.y)

    def draw(a: int, b: int, closed: bool = True) -> None:
        pa, pb = xy(a), xy(b)
        if pa is None or pb is None:
            return
        feeder = bus_feeder.get(a) if closed else None
        style = {"color": colour[feeder], "lw": 1.8} if feeder else {"color": "0.6", "lw": 1.0, "ls": "--"}
        ax.plot((pa[0], pb[0]), (pa[1], pb[1]), **style)

    for line in model.lines:
        draw(line.from_bus, line.to_bus)
    for trafo in model.transformers:
        buses = trafo.buses
        for other in buses[1:]:
            draw(buses[0], other)
    for sw in model.switches:
        closed = switch_closed.get(sw.name, not sw.open)
        draw(sw.from_bus, sw.to_bus, closed)
        if not closed:
            p = xy(sw.from_bus)
            if p is not None:
                ax.plot(*p, marker="s", mfc="white", mec="red", ms=8, zorder=5)
    for f in feeders:
        ax.plot([], [], color=colour[f], lw=2, label=f"fed by {f}")
    ax.plot([], [], color="0.6", ls="--", label="de-energized")
    ax.plot([], [], ls="", marker="s", mfc="white", mec="red", label="open switch")
    ax.set_title(title)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.legend(loc="best", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def voltage_profile_png(profiles: Mapping[str, list[tuple[float, float, float]]], path: Path, title: str) -> Path:
    """Per feeder: (distance from the substation km, three-phase min |V| pu, balanced |V| pu) along the ring."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, (feeder, rows) in enumerate(sorted(profiles.items())):
        rows = sorted(rows)
        c = _FEEDER_COLOURS[i % len(_FEEDER_COLOURS)]
        ax.plot([r[0] for r in rows], [r[1] for r in rows], color=c, marker="o", ms=3, label=f"{feeder} three-phase")
        ax.plot([r[0] for r in rows], [r[2] for r in rows], color=c, ls=":", label=f"{feeder} balanced")
    ax.set_xlabel("cable distance from the substation (km)")
    ax.set_ylabel("|V| (pu)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
