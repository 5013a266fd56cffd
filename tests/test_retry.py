"""The one retry primitive: backoff growth, cap and jitter, resets, the
classifier, the attempt limit and its log lines (deterministic rng and clock)."""

from __future__ import annotations

import logging

import pytest

from candlewire.errors import ConfigError, StoreUnavailable
from candlewire.retry import Backoff, Retry, transient


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    # rng 0.0 is the top of the jitter range: the ceiling itself.
    backoff = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=0.5, rng=lambda: 0.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5
    triple = Backoff(initial=0.1, maximum=1.0, multiplier=3.0, rng=lambda: 0.0)
    assert [round(triple.next(), 9) for _ in range(4)] == [0.1, 0.3, 0.9, 1.0]


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_jitter_stays_within_the_upper_fraction_of_the_ceiling(jitter: float) -> None:
    for draw in (0.0, 0.3, 0.999999):
        backoff = Backoff(initial=1.0, maximum=8.0, jitter=jitter, rng=lambda d=draw: d)
        for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0):
            delay = backoff.next()
            assert (1 - jitter) * ceiling <= delay <= ceiling
            assert delay == pytest.approx(ceiling * (1 - jitter * draw))


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, rng=lambda: 0.0)
    backoff.attempt = 10_000
    assert backoff.next() == 30.0


@pytest.mark.parametrize(
    "arguments",
    [
        {"initial": 0.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_bad_backoff_settings_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff needs"):
        Backoff(**arguments)


def retry(clock: Clock, **options: object) -> Retry:
    return Retry(
        Backoff(initial=1.0, maximum=8.0, rng=lambda: 0.0),
        name="test link",
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def test_a_healthy_spell_restarts_the_backoff_a_short_one_does_not() -> None:
    clock = Clock()
    link = retry(clock, reset_after=60.0)
    down = StoreUnavailable("refused")
    assert [link.delay_for(down) for _ in range(3)] == [1.0, 2.0, 4.0]
    link.connected()
    clock.now += 59.0  # up, but not long enough to count as healthy
    assert link.delay_for(down) == 8.0
    assert link.failures == 4
    link.connected()
    clock.now += 60.0
    assert link.delay_for(down) == 1.0
    assert link.failures == 1


def test_without_reset_after_a_connection_restarts_the_backoff_at_once() -> None:
    link = retry(Clock())
    down = OSError("reset by peer")
    assert [link.delay_for(down) for _ in range(2)] == [1.0, 2.0]
    link.connected()
    assert link.failures == 0
    assert link.delay_for(down) == 1.0


def test_an_error_the_classifier_refuses_is_raised_not_retried() -> None:
    link = retry(Clock())
    bug = KeyError("bug")
    with pytest.raises(KeyError) as raised:
        link.delay_for(bug)
    assert raised.value is bug
    assert link.failures == 0
    picky = Retry(Backoff(), name="picky", retryable=lambda e: isinstance(e, StoreUnavailable))
    with pytest.raises(OSError, match="refused"):
        picky.delay_for(OSError("refused"))
    assert picky.delay_for(StoreUnavailable("down")) > 0


def test_the_default_classifier_retries_network_and_dependency_errors_only() -> None:
    assert transient(OSError("reset"))
    assert transient(TimeoutError())
    assert transient(StoreUnavailable("down"))
    assert not transient(ConfigError("bad symbol"))
    assert not transient(ValueError("bug"))


def test_attempts_limit_consecutive_failures() -> None:
    clock = Clock()
    link = retry(clock, attempts=3)
    down = StoreUnavailable("down")
    assert [link.delay_for(down) for _ in range(2)] == [1.0, 2.0]
    with pytest.raises(StoreUnavailable):
        link.delay_for(down)
    link.succeeded()
    assert link.delay_for(down) == 1.0  # the count restarts after a success
    with pytest.raises(ValueError, match="attempts"):
        retry(clock, attempts=0)


def test_on_retry_sees_each_error_and_delay() -> None:
    seen: list[tuple[str, float]] = []
    link = retry(Clock(), on_retry=lambda error, delay: seen.append((str(error), delay)))
    link.delay_for(OSError("a"))
    link.delay_for(OSError("b"))
    assert seen == [("a", 1.0), ("b", 2.0)]


def test_an_outage_is_logged_once_then_its_end(caplog: pytest.LogCaptureFixture) -> None:
    link = retry(Clock())
    caplog.set_level(logging.DEBUG, logger="candlewire.retry")
    for _ in range(5):
        link.delay_for(StoreUnavailable("connection refused"))
    link.succeeded()
    link.delay_for(StoreUnavailable("connection refused"))
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in levels if level == logging.WARNING]
    assert warnings == [
        "test link: StoreUnavailable: connection refused; retrying in 1.00s",
        "test link: StoreUnavailable: connection refused; retrying in 1.00s",
    ]
    assert [m for level, m in levels if level == logging.INFO] == [
        "test link: working again after 5 failed attempts"
    ]
    assert sum(level == logging.DEBUG for level, _ in levels) == 4


async def test_wait_sleeps_the_delay_and_raises_what_it_cannot_fix() -> None:
    link = Retry(Backoff(initial=0.001, maximum=0.001), name="quick")
    await link.wait(OSError("blip"))
    assert link.failures == 1
    with pytest.raises(ZeroDivisionError):
        await link.wait(ZeroDivisionError())
