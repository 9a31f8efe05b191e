"""IEC 61850 MMS client adapter (libiec61850 through pyiec61850); see ``master``."""
