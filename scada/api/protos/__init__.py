"""Generated protobuf and gRPC modules of the dscada operator API (``python -m scada.api.codegen`` rebuilds them)."""
