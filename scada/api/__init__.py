"""The gRPC operator API: ``scada.api.server`` serves it, ``scada.api.client`` is its typed Python client.

Only the client is re-exported here so that importing it never pulls in the server side.
"""

from scada.api.client import ClientError, ScadaClient, Stream

__all__ = ["ClientError", "ScadaClient", "Stream"]
