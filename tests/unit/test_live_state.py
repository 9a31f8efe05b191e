"""Switches an optimisation must leave alone, from tags and markings; reconfiguration honours them."""

from __future__ import annotations

import pytest

from dms.live_state import held_switches
from dms.network_state import NetworkState
from dms.reconfig.engine import ReconfigOptions, propose_for_state
from models.sample_network import F_HZ, build_sample_network
from scada.tags import Tag, TagKind


def _tag(target: str, kind: TagKind, i: int = 1) -> Tag:
    return Tag(i, target, kind, "operator", "test", 0)


def test_held_switches_from_tags_and_markings() -> None:
    model = build_sample_network()
    held = held_switches(model, [_tag("F2-C04", TagKind.FAULTED), _tag("F5-RMU03-LBS1.Pos", TagKind.HOLD, 2),
                                 _tag("F6-RMU03-LBS1", TagKind.INFO, 3), _tag("F4-C02", TagKind.PARALLEL_ALLOWED, 4)])
    assert {"F2-RMU03-LBS2", "F2-RMU04-LBS1", "F5-RMU03-LBS1"} <= held
    assert "F6-RMU03-LBS1" not in held  # an info tag holds nothing
    assert not any(s.startswith("F4-") for s in held)


@pytest.mark.slow
def test_reconfiguration_never_reenergises_a_faulted_section() -> None:
    """After FLISR isolated F2-C04..C06 (RMU04/05 dead) the best radial configuration would feed the dead DTs again
    by closing an isolation switch; with the faulted marking those switches are held and the section stays dead."""
    model = build_sample_network()
    state = NetworkState.from_model(model, frequency_hz=F_HZ).with_switches(
        {"F2-RMU03-LBS2": False, "F2-RMU06-LBS1": False, "F1-RMU08-LBS2": True})
    held = held_switches(model, [_tag(line, TagKind.FAULTED, i) for i, line in enumerate(("F2-C04", "F2-C05",
                                                                                          "F2-C06"), 1)])
    proposal = propose_for_state(state, ReconfigOptions(held=held, milp_time_limit_s=5.0))
    touched = set(proposal.result.to_open) | set(proposal.result.to_close)
    assert not touched & held, touched & held
    after = proposal.target or state
    assert not after.closed("F2-RMU03-LBS2") and not after.closed("F2-RMU06-LBS1")
