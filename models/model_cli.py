"""``dscada model summary FILE [--json]``: import a CIM feeder and report what it holds.
``dscada model export-sample DIR [--json]``: write the embedded sample network (``models.sample_network``) as CIM100
RDF/XML to ``DIR/sample_network.xml`` and print its path and element counts.
``dscada model export-scl STATION.toml RTU OUT.cid [--json]``: write the SCL of IEC 61850 RTU ``RTU`` (its
``iec61850.scl`` file, or the SCL generated from its points: what the simulator serves and the client reads).

Standalone: ``python -m models.model_cli summary FILE``. Exit 0 on success, 2 when the file cannot be imported (every
problem on stderr) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from typing import Any

from models.cim import CimError, load_cim
from models.network import MeasurementKind, NetworkModel, phase_text

EXIT_OK = 0
EXIT_INVALID = 2
# Columns shown in the people's view (JSON carries all of them).
_TABLE_COLUMNS = frozenset({"name", "kind", "transformer", "bus", "from_bus", "to_bus", "phases", "step",
                            "normal_step", "low_step", "high_step", "normal_open", "open", "connection", "nominal_v",
                            "p_w", "q_var", "rated_s_va"})


def summarise(model: NetworkModel, import_s: float) -> dict[str, Any]:
    """The summary as plain JSON-able data (the table view prints the same)."""
    buses = model.buses

    def bus_name(index: int) -> str:
        return buses[index].name

    ratings: Counter[tuple[float | None, float | None]] = Counter(
        (_amps(ln.rated_current_a), _amps(ln.emergency_current_a)) for ln in model.lines)
    mtypes: dict[str, Counter[str]] = {k.value: Counter() for k in MeasurementKind}
    for m in model.measurements:
        mtypes[m.kind.value][m.measurement_type] += 1
    return {
        "file": model.source,
        "name": model.name,
        "import_s": round(import_s, 4),
        "elements": model.counts(),
        "cim_classes": dict(model.diagnostics.class_counts),
        "skipped_classes": dict(model.diagnostics.skipped_classes),
        "notes": list(model.diagnostics.notes),
        "tap_changers": [
            {"name": t.name, "transformer": _name_of(model, t.transformer_mrid), "end_number": t.end_number,
             "bus": bus_name(t.bus), "phases": phase_text(t.phases), "step": t.step, "normal_step": t.normal_step,
             "neutral_step": t.neutral_step, "low_step": t.low_step, "high_step": t.high_step,
             "step_voltage_increment_pct": t.step_voltage_increment_pct}
            for t in model.tap_changers],
        "switches": [
            {"name": s.name, "kind": s.kind.value, "from_bus": bus_name(s.from_bus), "to_bus": bus_name(s.to_bus),
             "phases": phase_text(s.phases), "normal_open": s.normal_open, "open": s.open}
            for s in model.switches],
        "capacitors": [
            {"name": c.name, "bus": bus_name(c.bus), "phases": phase_text(c.phases), "connection": c.connection.value,
             "nominal_v": c.nominal_v, "b_per_section_s": c.b_per_section_s, "sections": c.sections}
            for c in model.capacitors],
        "ders": [
            {"name": d.name, "kind": d.kind.value, "bus": bus_name(d.bus), "phases": phase_text(d.phases),
             "p_w": d.p_w, "q_var": d.q_var, "rated_s_va": d.rated_s_va, "units": len(d.units)}
            for d in model.ders],
        # lines by (normal, emergency) current rating; null when the file gives none
        "line_ratings": [{"rated_current_a": normal, "emergency_current_a": emergency, "lines": n}
                         for (normal, emergency), n in sorted(ratings.items(), key=lambda kv: -kv[1])],
        "measurement_types": {kind: dict(sorted(c.items())) for kind, c in mtypes.items()},
        "load_total": {"p_w": sum(ld.p_w for ld in model.loads), "q_var": sum(ld.q_var for ld in model.loads)},
    }


def _amps(value: float) -> float | None:
    return None if math.isnan(value) else value


def _name_of(model: NetworkModel, mrid: str) -> str:
    for t in model.transformers:
        if t.mrid == mrid:
            return t.name
    return mrid


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {value!r}")


def _clean(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _print_tables(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['name']}[/bold] from {summary['file']} (imported in {summary['import_s']:.3f} s)")

    def simple(title: str, rows: dict[str, Any], key: str = "item", value: str = "count") -> None:
        table = Table(title=title)
        table.add_column(key)
        table.add_column(value, justify="right")
        for k, v in rows.items():
            table.add_row(str(k), str(v))
        console.print(table)

    simple("Network model", summary["elements"], "element")
    simple("Line ratings (A)", {f"{_text_a(r['rated_current_a'])} / {_text_a(r['emergency_current_a'])}": r["lines"]
                                for r in summary["line_ratings"]}, "normal / emergency", "lines")
    for kind, types in summary["measurement_types"].items():
        simple(f"{kind.capitalize()} measurements by type", types, "measurementType")
    for title, rows in (("Tap changers", summary["tap_changers"]), ("Switches", summary["switches"]),
                        ("Capacitors", summary["capacitors"]), ("DERs", summary["ders"])):
        if not rows:
            continue
        table = Table(title=title)
        rows = [{k: v for k, v in row.items() if k in _TABLE_COLUMNS} for row in rows]
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    simple("CIM classes read", summary["cim_classes"], "class", "objects")
    simple("Skipped classes (read, not used)", summary["skipped_classes"], "class", "objects")
    for note in summary["notes"]:
        console.print(f"note: {note}")


def _text_a(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _export_sample(directory: str, *, as_json: bool) -> int:
    from models.sample_network import build_sample_network, export_sample

    started = time.perf_counter()
    try:
        path = export_sample(directory)
    except OSError as exc:
        print(f"dscada model: cannot write the sample network to {directory}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    counts = build_sample_network().counts()
    if as_json:
        print(json.dumps({"file": str(path), "bytes": path.stat().st_size, "export_s": round(
            time.perf_counter() - started, 4), "elements": counts}, indent=2))
    else:
        print(path)
        for key, value in counts.items():
            print(f"  {key:24} {value}")
    return EXIT_OK


def _export_scl(station: str, rtu: str, out: str, *, as_json: bool) -> int:
    from models.config import load_station_config
    from models.errors import ConfigError
    from models.scl import SclError, export_rtu_scl, load_scl

    try:
        config = load_station_config(station)
        path = export_rtu_scl(config, rtu, out)
    except (ConfigError, SclError) as exc:
        print(f"dscada model export-scl: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada model export-scl: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    doc = load_scl(path)  # read back: what was written parses, and the counts describe the file itself
    ied = doc.ied(config.rtu(rtu).ied_name)
    counts = {"logical_devices": len(ied.ldevices), "logical_nodes": sum(len(ld.lns) for ld in ied.ldevices),
              "data_sets": len(doc.datasets(ied)), "report_controls": len(doc.report_controls(ied)),
              "points": len(config.points_of_rtu(rtu))}
    if as_json:
        print(json.dumps({"file": str(path), "ied": ied.name, "bytes": path.stat().st_size, **counts}, indent=2))
    else:
        print(path)
        print(f"  {'ied':24} {ied.name}")
        for key, value in counts.items():
            print(f"  {key:24} {value}")
    return EXIT_OK


_GIS_ACTIONS = {
    "apply-diff": "GIS import: validate a CIM difference against a base file (and merge it)",
    "make-diff": "GIS import: compare a full new CIM file with the base, as a difference",
    "export-changes": "GIS export: switching/NOP changes as a CIM difference (feeder and DT changes)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada model", description="Network model (CIM) tools")
    sub = parser.add_subparsers(dest="action", required=True)
    summary = sub.add_parser("summary", help="import a CIM RDF/XML feeder and report its contents")
    summary.add_argument("file", help="CIM100 RDF/XML file")
    summary.add_argument("--json", action="store_true", help="print JSON instead of tables")
    export = sub.add_parser("export-sample", help="write the embedded sample network as CIM100 RDF/XML")
    export.add_argument("dir", help="directory to write sample_network.xml into (created if missing)")
    export.add_argument("--json", action="store_true", help="print JSON instead of text")
    scl = sub.add_parser("export-scl", help="write an IEC 61850 RTU's SCL (its file, or generated from its points)")
    scl.add_argument("station", help="station configuration (TOML)")
    scl.add_argument("rtu", help="name of an iec61850 RTU in it")
    scl.add_argument("out", help="SCL file to write (e.g. IED1.cid)")
    scl.add_argument("--json", action="store_true", help="print JSON instead of text")
    for action, text in _GIS_ACTIONS.items():
        sub.add_parser(action, help=text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _GIS_ACTIONS:
        from models.gis_cli import main as gis_main

        return gis_main(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) or bad usage (2): return the code instead
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INVALID
    if args.action == "export-sample":
        return _export_sample(args.dir, as_json=args.json)
    if args.action == "export-scl":
        return _export_scl(args.station, args.rtu, args.out, as_json=args.json)
    started = time.perf_counter()
    try:
        model = load_cim(args.file)
    except CimError as exc:
        print(f"dscada model: {exc}", file=sys.stderr)
        return EXIT_INVALID
    data = _clean(summarise(model, time.perf_counter() - started))
    if args.json:
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        _print_tables(data)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
