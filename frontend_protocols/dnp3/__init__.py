"""DNP3 (IEEE 1815) master adapter on opendnp3 (yadnp3)."""
