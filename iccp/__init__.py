"""ICCP / TASE.2 exchange with transmission SCADA; see issue #7."""
