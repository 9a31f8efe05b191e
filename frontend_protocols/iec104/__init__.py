"""IEC 60870-5-104 master adapter (c104). ``master.run_adapter`` is the process entry point; ``mapping`` holds the
protocol-to-models conversions. Importing this package does not import c104; ``master`` does."""
