"""Balanced network model for the WLS estimator: pandapower's own admittance matrices after ``runpp``.

``net._ppc["internal"]`` (the *ppci*) holds only in-service buses and branches, with bus-bus switches merged; the
estimator works in that numbering and keeps the lookups back to pandapower element indices for names and results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dms.se.errors import SeError

# Element tables whose in-service rows make a bus an injection bus (anything else is a zero-injection bus).
INJECTION_TABLES = ("load", "sgen", "gen", "ext_grid", "storage", "ward", "xward", "motor", "asymmetric_load",
                    "asymmetric_sgen", "shunt")


@dataclass(frozen=True, slots=True, eq=False)
class BalancedNetwork:
    """In-service buses and branches of a solved pandapower net in per unit (``base_mva``)."""

    base_mva: float
    ybus: sp.csr_matrix
    yf: sp.csr_matrix  # from-end branch currents = yf @ V
    yt: sp.csr_matrix
    f_bus: np.ndarray  # internal bus index of each branch end
    t_bus: np.ndarray
    slack: int  # internal index of the angle reference bus
    slack_va_rad: float  # its angle (the reference is kept, not estimated)
    zero_injection: np.ndarray  # bool per internal bus
    bus_names: tuple[str, ...]  # "bus 17" (pandapower index; merged buses joined by "+")
    branch_names: tuple[str, ...]  # "line 5", "trafo 3"
    bus_of_pp: dict[int, int]  # pandapower bus index -> internal bus index
    v_powerflow: np.ndarray  # complex bus voltages of the power flow (truth for generated measurements)

    @property
    def n_bus(self) -> int:
        return self.ybus.shape[0]

    @property
    def n_branch(self) -> int:
        return self.yf.shape[0]


def network_from_pandapower(net) -> BalancedNetwork:  # noqa: ANN001 - pandapowerNet is untyped
    """Model of a pandapower net on which ``pandapower.runpp`` has just converged (its ppci is reused)."""
    ppc = getattr(net, "_ppc", None)
    if not ppc or "internal" not in ppc or "Ybus" not in ppc["internal"] or not ppc.get("success", False):
        raise SeError(f"network {net.name or '(unnamed)'!r}: run pandapower.runpp successfully before building the "
                      "estimator model (its internal Ybus is reused)")
    ppci = ppc["internal"]
    n_bus = ppci["bus"].shape[0]
    lookup = np.asarray(net._pd2ppc_lookups["bus"])
    bus_of_pp: dict[int, int] = {}
    members: list[list[int]] = [[] for _ in range(n_bus)]
    for pp_bus in net.bus.index[net.bus.in_service.values]:
        k = int(lookup[pp_bus])
        if 0 <= k < n_bus:
            bus_of_pp[int(pp_bus)] = k
            members[k].append(int(pp_bus))
    bus_names = tuple("bus " + "+".join(map(str, m)) if m else f"aux bus {k}" for k, m in enumerate(members))
    # Branch names: ppc branch ranges per element table, then the in-service mask of the ppci.
    ppc_names = [""] * ppc["branch"].shape[0]
    for table, (start, stop) in net._pd2ppc_lookups["branch"].items():
        idx = net[table].index.values
        for j in range(start, stop):
            # trafo3w contributes three branches per transformer (hv, mv, lv legs)
            ppc_names[j] = (f"{table} {idx[(j - start) % len(idx)]}" if table != "trafo3w"
                            else f"trafo3w {idx[(j - start) % len(idx)]} leg {(j - start) // len(idx)}")
    branch_is = np.asarray(ppci["branch_is"], dtype=bool)
    branch_names = tuple(n for n, keep in zip(ppc_names, branch_is, strict=True) if keep)
    injecting = np.zeros(n_bus, dtype=bool)
    for table in INJECTION_TABLES:
        if table in net and len(net[table]):
            df = net[table]
            buses = df.bus.values[df.in_service.values.astype(bool)]
            ks = lookup[buses]
            injecting[ks[(ks >= 0) & (ks < n_bus)]] = True
    ref = np.asarray(ppci["ref"]).ravel()
    if ref.size == 0:
        raise SeError(f"network {net.name or '(unnamed)'!r}: no reference (slack) bus in service")
    v = np.asarray(ppci["V"], dtype=complex)
    return BalancedNetwork(
        base_mva=float(ppci["baseMVA"]), ybus=sp.csr_matrix(ppci["Ybus"]), yf=sp.csr_matrix(ppci["Yf"]),
        yt=sp.csr_matrix(ppci["Yt"]), f_bus=ppci["branch"][:, 0].real.astype(np.int64),
        t_bus=ppci["branch"][:, 1].real.astype(np.int64), slack=int(ref[0]), slack_va_rad=float(np.angle(v[ref[0]])),
        zero_injection=~injecting, bus_names=bus_names, branch_names=branch_names, bus_of_pp=bus_of_pp,
        v_powerflow=v)
