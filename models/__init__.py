"""Pure data shared by every layer: points, quality, updates, commands, configuration, the network model.

Nothing here performs I/O beyond reading configuration files, and nothing here imports a protocol library.
"""
