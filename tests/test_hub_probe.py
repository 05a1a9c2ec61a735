"""Whether the Hugging Face hub is reachable is probed once and the answer reused for a minute, not
for the life of the process."""

from __future__ import annotations


def test_the_hub_probe_is_reused_for_a_minute_not_forever(monkeypatch):
    from huggingface_hub import constants

    from hf_toolkit.core import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probed", {})
    probes = []
    monkeypatch.setattr(hub, "_probe", lambda endpoint: probes.append(endpoint) or False)
    clock = [1000.0]
    monkeypatch.setattr(hub.time, "monotonic", lambda: clock[0])
    assert hub.reachable() is False and hub.reachable() is False
    assert len(probes) == 1
    clock[0] += hub.PROBE_TTL_SECONDS + 1
    hub.reachable()
    assert len(probes) == 2
