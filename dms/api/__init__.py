"""gRPC services of the DMS applications, served by the control centre's gRPC server (``dms.server``)."""
