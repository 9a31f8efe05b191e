"""The real-time database and the services around it: SOE, alarms, historian, commands, the gRPC API."""
