"""Typed search events (alphac.search.events): kinds, plain forms, and both callback forms."""

from __future__ import annotations

import json

from alphac.search.events import (
    EVENTS,
    FailedEvent,
    FinalTrained,
    Point,
    Progress,
    Trained,
    listener,
)


def test_every_event_kind_is_unique_and_its_plain_form_is_json():
    assert set(EVENTS) == {"start", "done", "failed", "retry", "promoted", "reference",
                           "final_start", "final"}
    event = Trained(id=3, val_accuracy=0.8, params=10, flops=20.0, latency_ms=None, seconds=1.5,
                    progress=Progress(trained=1, seed=Point(0.79, 100.0)))
    info = event.as_dict()
    assert info["id"] == 3 and info["seed"] is False
    assert info["progress"]["seed"] == {"val_accuracy": 0.79, "cost": 100.0, "id": None}
    json.dumps(info)  # plain values only


def test_a_one_argument_callback_gets_the_typed_event():
    seen = []
    listener(seen.append)(FailedEvent(id=2, reason="synthesis: none"))
    assert seen == [FailedEvent(id=2, reason="synthesis: none")]


def test_a_two_argument_callback_gets_kind_and_a_dict():
    seen = []
    listener(lambda kind, info: seen.append((kind, info)))(
        FinalTrained(id=1, val_accuracy=0.9, test_accuracy=0.88))
    assert seen[0][0] == "final" and seen[0][1]["test_accuracy"] == 0.88
    assert "progress" in seen[0][1]


def test_no_callback_listens_to_nothing():
    listener(None)(FailedEvent(id=1, reason="x"))  # does not raise
