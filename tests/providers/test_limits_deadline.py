"""Deadline.error() blames the limit that ran out, whichever moment a reader's timer woke it."""

from __future__ import annotations

from orchestrator_core.providers.limits import Deadline


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reader_woken_a_hair_before_the_whole_call_deadline_is_told_the_whole_call_limit() -> None:
    clock = Clock()
    deadline = Deadline(0.4, setting="CALL_DEADLINE_S", where="openai:m", idle_s=5.0, clock=clock)
    clock.now += 0.3999  # a millisecond timer fired just short of the end
    assert "did not finish within 0.4s" in deadline.error().message


def test_a_stream_silent_past_its_idle_limit_is_told_the_idle_limit() -> None:
    clock = Clock()
    deadline = Deadline(10.0, setting="CALL_DEADLINE_S", where="openai:m", idle_s=0.3, clock=clock)
    clock.now += 0.2
    deadline.progress()
    clock.now += 0.2999
    assert "sent no new data for 0.3s" in deadline.error().message


def test_a_call_without_an_idle_limit_is_told_the_whole_call_limit() -> None:
    clock = Clock()
    deadline = Deadline(1.0, setting="STATUS_TIMEOUT_S", where="lmstudio", clock=clock)
    clock.now += 1.0
    assert "(the whole-call limit STATUS_TIMEOUT_S)" in deadline.error().message
