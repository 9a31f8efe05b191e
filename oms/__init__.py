"""Outage management: AMI outage events, outage prediction, crews, IEEE 1366 reliability indices; see issue #6."""
