"""The live network model of a running server: GIS updates by CIM difference, and reconfiguration export.

``ModelService`` holds the CIM graph the network model was built from and the model itself. ``apply`` takes an
IEC 61970-552 difference document, applies and validates it whole (``models.cim.difference.apply_difference``), also
refuses it when it removes or renames an element an RTDB point is bound to (the point list is fixed until a restart),
then swaps graph and model, hands the model to the topology service (which re-applies live switch states), audits it
and bumps the model version. ``export_changes`` writes the reconfiguration between the model's switch states (or its
normal states) and the live ones as a CIM difference for GIS and energy accounting.

Persistence (a choice): an applied model is written to ``<data_dir>/network_current.xml`` with a sidecar
``network_current.json`` holding the SHA-256 of the station's own CIM file and the model version. At start the
persisted model is used only while the station's CIM file is unchanged (same hash): a new full model from GIS,
dropped in place of the station file, wins over older incremental updates. A persisted model that no longer
validates or breaks a point binding is ignored with a warning, never half-used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from models.cim import read_rdf
from models.cim.build import build_network
from models.cim.difference import DifferenceSummary, apply_difference, graph_document, parse_difference
from models.cim.errors import CimError
from models.cim.rdf import CimGraph
from models.config import OperatorConfig, StationConfig
from models.errors import ModelError
from models.gis_exchange import Reconfiguration, analyse_reconfiguration, reconfiguration_document
from models.network import NetworkModel
from models.timebase import now_ms
from models.topology import TopologyError
from scada.errors import ScadaError
from scada.topology_service import AuditSink, TopologyService

__all__ = ["ExportBase", "ExportedChanges", "ModelInfo", "ModelService", "ModelServiceError", "ModelUpdateRefused"]

log = logging.getLogger(__name__)

CURRENT_MODEL_FILE = "network_current.xml"
CURRENT_MODEL_META = "network_current.json"


class ModelServiceError(ScadaError):
    """The live network model cannot be read, updated or exported as asked."""


class ModelUpdateRefused(ModelServiceError):
    """A difference was refused; nothing changed. The message lists every problem."""


class ExportBase(StrEnum):
    MODEL = "model"  # against the switch states the model (GIS) holds
    NORMAL = "normal"  # against the normal states (normally-open points) of the model


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int  # 1 at start, +1 per applied difference
    source: str  # the station's CIM file
    persisted_file: str  # "" when the model is the station file's
    buses: int
    lines: int
    transformers: int
    switches: int
    loads: int
    feeders: int
    updated_ms: int  # 0 before the first update
    updated_by: str


@dataclass(frozen=True, slots=True)
class ExportedChanges:
    document: bytes  # the CIM difference (RDF/XML)
    reconfiguration: Reconfiguration
    model_version: int
    uncertain_switches: tuple[str, ...]  # live state uncertain: left at the base state in the export


class ModelService:
    """One lock serialises updates and exports; readers of ``graph`` / ``model`` get consistent immutable objects."""

    def __init__(self, config: StationConfig, topology: TopologyService, *, data_dir: str | Path,
                 audit: AuditSink | None = None, persist: bool = True) -> None:
        if config.network is None:
            raise ModelServiceError(f"station {config.name!r} has no network model ([network] cim)")
        self._config = config
        self._topology = topology
        self._audit = audit
        self._lock = threading.Lock()
        self._source = Path(config.network.source)
        self._persist_path = Path(data_dir) / CURRENT_MODEL_FILE if persist else None
        try:
            self._graph: CimGraph = read_rdf(self._source)
        except (CimError, OSError) as exc:
            raise ModelServiceError(f"network model {self._source}: cannot read it again: {exc}") from None
        self._model: NetworkModel = config.network
        self._version = 1
        self._updated_ms = 0
        self._updated_by = ""
        self._persisted = ""
        self._load_persisted()

    # ------------------------------------------------------------------------------------------ queries
    @property
    def graph(self) -> CimGraph:
        return self._graph

    @property
    def model(self) -> NetworkModel:
        return self._model

    @property
    def version(self) -> int:
        return self._version

    def info(self) -> ModelInfo:
        with self._lock:
            m = self._model
            return ModelInfo(m.name, self._version, str(self._source), self._persisted, len(m.buses), len(m.lines),
                             len(m.transformers), len(m.switches), len(m.loads), len(m.feeders), self._updated_ms,
                             self._updated_by)

    # ------------------------------------------------------------------------------------------ GIS import
    def apply(self, document: bytes, operator: OperatorConfig, *, dry_run: bool = False,
              source: str = "<difference>") -> tuple[DifferenceSummary, int]:
        """Validate and (unless ``dry_run``) apply a difference. Returns the summary and the model version after it
        (unchanged for a dry run). ModelUpdateRefused names every problem; nothing changes then."""
        with self._lock:
            try:
                graph, model, summary = apply_difference(self._graph, parse_difference(document, source))
                model = replace(model, name=self._model.name)  # a several-feeder model is named after its file
                self._check_bindings(graph, source)
            except (CimError, ModelUpdateRefused) as exc:
                if not dry_run:
                    self._record(operator, "refused", str(exc))
                raise ModelUpdateRefused(str(exc)) from None
            if dry_run:
                return summary, self._version
            # The topology rebinds first (it keeps its old model if it cannot take the new one); then the model is
            # stored, so that what runs is what a restart loads, or the topology goes back and nothing changed.
            try:
                self._topology.replace_model(model)
            except (TopologyError, ModelError, ScadaError, ValueError) as exc:
                self._record(operator, "refused", f"{source}: topology cannot take the model: {exc}")
                raise ModelUpdateRefused(f"{source} (not applied: the topology cannot take the new model): {exc}"
                                         ) from None
            if self._persist_path is not None:
                try:
                    self._write_persisted(graph, self._version + 1)
                except ModelUpdateRefused as exc:
                    self._topology.replace_model(self._model)
                    self._record(operator, "refused", str(exc))
                    raise
            self._graph, self._model = graph, model
            self._version += 1
            self._updated_ms, self._updated_by = now_ms(), operator.name
            counts = ", ".join(f"{cls} +{c['added']}/-{c['removed']}/~{c['changed']}"
                               for cls, c in summary.by_class().items())
            self._record(operator, "answered",
                         f"model version {self._version} from {source} ({summary.header.description}): {counts}")
            log.info("network model %s updated to version %d from %s", model.name, self._version, source)
            return summary, self._version

    def _check_bindings(self, graph: CimGraph, source: str) -> None:
        """Every element a point names (mRID or name) must still be there under the same name."""
        old, new = _identities(self._graph), _identities(graph)
        problems = []
        for p in self._config.points:
            if not p.element:
                continue
            missing = old.get(p.element, set()) - new.get(p.element, set())
            for mrid in sorted(missing):
                obj = self._graph.objects[mrid]
                after = graph.objects.get(mrid)
                what = f"renames it to {after.name!r}" if after is not None else "removes it"
                problems.append(f"point {p.name!r} is bound to {obj.cim_class} {mrid} {obj.name!r}; the difference "
                                f"{what}")
        if problems:
            raise ModelUpdateRefused(
                f"{source} (not applied: the point list cannot change without a restart; change the station "
                f"configuration and restart instead): " + "; ".join(problems))

    def _record(self, operator: OperatorConfig, outcome: str, detail: str) -> None:
        if self._audit is not None:
            self._audit.record(operator=operator.name, role=operator.role.value, point=-1,
                               point_name=self._model.name, action="model_difference", value=float(self._version),
                               outcome=outcome, reason="invalid_value" if outcome == "refused" else "model_update",
                               field_detail=detail)

    # ------------------------------------------------------------------------------------------ GIS export
    def export_changes(self, *, permanent: bool = False, since: ExportBase = ExportBase.MODEL,
                       operator: str = "", reason: str = "", when: datetime | None = None) -> ExportedChanges:
        """The reconfiguration from the model's (or its normal) switch states to the live ones, as a difference."""
        with self._lock:
            model, graph = self._model, self._graph
            if since is ExportBase.NORMAL:
                before = {sw.mrid: not sw.normal_open for sw in model.switches}
            else:
                before = {sw.mrid: not sw.open for sw in model.switches}
            live = self._topology.switch_states()
            uncertain = tuple(s.name for s in live if s.uncertain)
            after = {s.mrid: s.closed for s in live if not s.uncertain}
            try:
                r = analyse_reconfiguration(model, before, after, when or datetime.now(UTC), operator=operator,
                                            reason=reason, permanent=permanent, graph=graph)
                document = reconfiguration_document(r, graph=graph)
            except (CimError, ValueError) as exc:
                raise ModelServiceError(f"network model {model.name!r}: cannot export the reconfiguration: {exc}"
                                        ) from None
            return ExportedChanges(document, r, self._version, uncertain)

    # ------------------------------------------------------------------------------------------ persistence
    def _meta_path(self) -> Path:
        assert self._persist_path is not None
        return self._persist_path.with_name(CURRENT_MODEL_META)

    def _write_persisted(self, graph: CimGraph, version: int) -> None:
        assert self._persist_path is not None
        path, meta = self._persist_path, self._meta_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(graph_document(graph))
            os.replace(tmp, path)
            meta.write_text(json.dumps({"base_sha256": _sha256(self._source), "base": str(self._source),
                                        "version": version}), encoding="utf-8")
        except OSError as exc:
            raise ModelUpdateRefused(f"network model: cannot persist the update to {path}: {exc}") from None
        self._persisted = str(path)

    def _load_persisted(self) -> None:
        if self._persist_path is None or not self._persist_path.is_file():
            return
        path = self._persist_path
        try:
            meta: dict[str, Any] = json.loads(self._meta_path().read_text(encoding="utf-8"))
            if meta.get("base_sha256") != _sha256(self._source):
                log.warning("network model: %s is for an older %s; the station file is used", path, self._source)
                return
            graph = read_rdf(path)
            model = replace(build_network(graph), name=self._model.name)
            self._check_bindings(graph, str(path))
        except (OSError, ValueError, CimError, ModelUpdateRefused) as exc:
            log.warning("network model: persisted %s ignored: %s", path, exc)
            return
        self._graph, self._model = graph, model
        self._version = int(meta.get("version", 1))
        self._persisted = str(path)
        self._topology.replace_model(model)
        log.info("network model %s: persisted version %d loaded from %s", model.name, self._version, path)


def _identities(graph: CimGraph) -> dict[str, set[str]]:
    """mRID and name -> the mRIDs they resolve to (a point names its element either way)."""
    out: dict[str, set[str]] = {}
    for mrid, obj in graph.objects.items():
        out.setdefault(mrid, set()).add(mrid)
        if obj.name:
            out.setdefault(obj.name, set()).add(mrid)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
