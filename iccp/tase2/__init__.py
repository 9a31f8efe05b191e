"""TASE.2 (ICCP, IEC 60870-6-503/802): object model (``model``), RTDB mapping (``mapping``) and bilateral tables
(``bilateral``); the server and client build on them."""
