"""Modbus TCP master adapter (pymodbus). ``master.run_adapter`` is the process entry point; ``register_map`` plans the
scan (groups, coalesced reads); ``codec`` turns registers into engineering values and quality. Importing this package
does not import pymodbus; ``master`` does."""
