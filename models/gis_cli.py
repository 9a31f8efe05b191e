"""GIS exchange on the command line (wired into ``dscada model`` by ``models.model_cli``):

    dscada model apply-diff BASE.xml DIFF.xml [--json] [--output MERGED.xml]
        validate a CIM difference model against a base CIM file and report what it adds, removes and changes;
        ``--output`` writes the merged model (CIM RDF/XML) when it validates
    dscada model make-diff BASE.xml NEW.xml [--output DIFF.xml] [--description TEXT] [--json]
        a full model (e.g. a GIS export) compared with the base as a difference model, checked like ``apply-diff``
    dscada model export-changes BASE.xml [--close SW ...] [--open SW ...] [--permanent] [--at ISO-TIME]
                                [--operator NAME] [--reason TEXT] [--output DIFF.xml] [--json]
        the CIM difference of a reconfiguration from the base's switch states (switches by name or mRID), with the
        feeder changes per distribution transformer; the document goes to ``--output`` (else stdout, without the
        table)

Standalone: ``python -m models.gis_cli apply-diff ...``. Exit 0 on success, 2 when a file cannot be read, the
difference is refused (every problem on stderr) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.cim import CimError, CimGraph, build_network, read_rdf
from models.cim.difference import (
    DifferenceHeader,
    DifferenceSummary,
    apply_difference,
    compare_graphs,
    difference_document,
    graph_document,
)
from models.errors import ModelError
from models.gis_exchange import analyse_reconfiguration, reconfiguration_document

EXIT_OK = 0
EXIT_INVALID = 2


def _summary_json(summary: DifferenceSummary, apply_s: float, *graphs: CimGraph) -> dict[str, Any]:
    """The summary as JSON; a reference value also gets the name of the object it points at (``old_name``...)."""
    def name_of(mrid: str | None) -> str | None:
        for g in graphs:
            found = g.objects.get(mrid or "")
            if found is not None and found.name:
                return found.name
        return None

    def obj(o: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"class": o.cim_class, "mrid": o.mrid, "name": o.name}
        if o.changes:
            out["changes"] = [{"property": c.prop, "old": c.old, "new": c.new, "old_name": name_of(c.old),
                               "new_name": name_of(c.new)} for c in o.changes]
        return out
    return {"difference": summary.source, "created": summary.header.created,
            "description": summary.header.description, "apply_s": round(apply_s, 4), "by_class": summary.by_class(),
            "added": [obj(o) for o in summary.added], "removed": [obj(o) for o in summary.removed],
            "changed": [obj(o) for o in summary.changed]}


def _print_summary(data: dict[str, Any]) -> None:
    print(f"{data['difference']}: valid, applied in {data['apply_s']:.3f} s (created {data['created'] or '?'})")
    if data["description"]:
        print(f"  {data['description']}")
    for cls, counts in data["by_class"].items():
        print(f"  {cls:<32} added {counts['added']:>4}  removed {counts['removed']:>4}  changed {counts['changed']:>4}")
    for kind in ("added", "removed"):
        for o in data[kind]:
            print(f"  {kind:<8} {o['class']} {o['name'] or o['mrid']}")
    for o in data["changed"]:
        for c in o["changes"]:
            old, new = c["old_name"] or c["old"], c["new_name"] or c["new"]
            print(f"  changed  {o['class']} {o['name'] or o['mrid']}: {c['property']} {old} -> {new}")


def _apply_diff(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    base = read_rdf(args.base)
    graph, _model, summary = apply_difference(base, args.diff)
    data = _summary_json(summary, time.perf_counter() - started, base, graph)
    if args.output:
        Path(args.output).write_bytes(graph_document(graph))
        data["output"] = args.output
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_summary(data)
        if args.output:
            print(f"merged model written to {args.output}")
    return EXIT_OK


def _make_diff(args: argparse.Namespace) -> int:
    base, new = read_rdf(args.base), read_rdf(args.new)
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    header = DifferenceHeader(str(uuid.uuid4()), created, args.description or f"{args.new} against {args.base}",
                              "dscada")
    diff = compare_graphs(base, new, header)
    started = time.perf_counter()
    _graph, _model, summary = apply_difference(base, diff)  # the same checks as an incremental import
    data = _summary_json(summary, time.perf_counter() - started, base, new)
    if args.output:
        Path(args.output).write_bytes(difference_document(diff.header, diff.forward, diff.reverse))
        data["output"] = args.output
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_summary(data)
        if args.output:
            print(f"difference model written to {args.output}")
    return EXIT_OK


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ModelError(f"--at {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.astimezone()  # a local wall-clock time gets the local zone


def _export_changes(args: argparse.Namespace) -> int:
    graph = read_rdf(args.base)
    model = build_network(graph)
    after = {name: True for name in args.close} | {name: False for name in args.open}
    both = set(args.close) & set(args.open)
    if both:
        raise ModelError(f"switch(es) {', '.join(sorted(both))} both --close and --open")
    reconf = analyse_reconfiguration(model, {}, after, _parse_time(args.at), operator=args.operator,
                                     reason=args.reason, permanent=args.permanent, graph=graph)
    document = reconfiguration_document(reconf, graph=graph)
    if args.output:
        Path(args.output).write_bytes(document)
    if args.json:
        print(json.dumps(reconf.to_json() | {"output": args.output}, indent=2))
    elif args.output:
        print(reconf.table())
        print(f"difference model written to {args.output}")
    else:
        sys.stdout.write(document.decode("utf-8"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada model", description="GIS exchange: CIM difference models")
    sub = parser.add_subparsers(dest="action", required=True)
    apply = sub.add_parser("apply-diff", help="validate (and merge) a CIM difference against a base CIM file")
    apply.add_argument("base", help="base CIM100 RDF/XML file")
    apply.add_argument("diff", help="IEC 61970-552 difference model")
    apply.add_argument("--output", help="write the merged model here (CIM RDF/XML)")
    apply.add_argument("--json", action="store_true", help="print JSON")
    make = sub.add_parser("make-diff", help="compare a full model with the base as a difference model")
    make.add_argument("base", help="base CIM100 RDF/XML file")
    make.add_argument("new", help="the full new model (CIM100 RDF/XML)")
    make.add_argument("--output", help="write the difference model here")
    make.add_argument("--description", default="", help="md:Model.description of the difference")
    make.add_argument("--json", action="store_true", help="print JSON")
    export = sub.add_parser("export-changes", help="write a reconfiguration as a CIM difference")
    export.add_argument("base", help="CIM100 RDF/XML file whose switch states are the starting point")
    export.add_argument("--close", action="append", default=[], metavar="SWITCH", help="switch closed (repeatable)")
    export.add_argument("--open", action="append", default=[], metavar="SWITCH", help="switch opened (repeatable)")
    export.add_argument("--permanent", action="store_true", help="make the new state normal (normally-open points)")
    export.add_argument("--at", help="reconfiguration time, ISO 8601 (default: now, UTC)")
    export.add_argument("--operator", default="", help="who switched")
    export.add_argument("--reason", default="", help="why")
    export.add_argument("--output", help="write the difference document here (else it goes to stdout)")
    export.add_argument("--json", action="store_true", help="print the analysis as JSON")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help (0) or bad usage (2): return the code instead
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INVALID
    try:
        actions = {"apply-diff": _apply_diff, "make-diff": _make_diff, "export-changes": _export_changes}
        return actions[args.action](args)
    except CimError as exc:
        print(f"dscada model: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (ModelError, OSError) as exc:
        print(f"dscada model: {exc}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
