"""Distribution management applications (state estimation, FLISR, Volt/VAR, reconfiguration, switch orders,
study mode). They read the RTDB through scada and the network model from models; see issue #5."""
