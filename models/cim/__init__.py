"""CIM (IEC 61970/61968, CIM100 RDF/XML) import of distribution feeders into ``models.network``."""

from models.cim.build import USED_CLASSES, build_network, load_cim
from models.cim.errors import CimError, CimProblem
from models.cim.rdf import CimGraph, CimObject, read_rdf

__all__ = ["USED_CLASSES", "CimError", "CimGraph", "CimObject", "CimProblem", "build_network", "load_cim", "read_rdf"]
