"""Webhooks sit above runs: they subscribe to its event bus and its recovery thread,
and runs never imports them."""

from runs import events, sweeps
from webhooks.tasks import dispatch_event, recover_deliveries


def test_webhooks_listen_to_the_event_bus_and_join_the_recovery():
    assert dispatch_event in events.listeners
    assert recover_deliveries in sweeps.recoveries


def test_listening_twice_hands_each_event_over_once(monkeypatch):
    monkeypatch.setattr(events, "listeners", [])
    events.listen(dispatch_event)
    events.listen(dispatch_event)
    assert events.listeners == [dispatch_event]
