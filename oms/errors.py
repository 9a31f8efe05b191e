class OmsError(Exception):
    """Root of outage-management errors: bad input files, unknown network elements, invalid rules."""
