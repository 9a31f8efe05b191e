"""Protocol front ends. Each adapter runs in its own supervised process and speaks only models' message types
to the rest of the system; no protocol library type crosses this package's boundary."""
