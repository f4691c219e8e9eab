"""alphac.units: one duration grammar for every --budget, one way to print counts and durations."""

from __future__ import annotations

import pytest

from alphac.errors import InvalidDurationError, UserError
from alphac.units import format_count, format_duration, parse_duration

GOOD = [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400),
        ("2m30s", 150), ("1h 30m", 5400), (" 10 min ", 600), ("2.5m", 150), ("1H30M", 5400),
        ("1 hour 5 minutes", 3900), ("45sec", 45), (".5m", 30)]
BAD = ["", "abc", "soon", "0", "0s", "-5m", "5d", "m", "1h30", "30m1h", "1m1m", "1h-30m", "1e3s",
       "1..5h"]


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", BAD)
def test_a_bad_duration_names_the_text_and_shows_good_ones(text):
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(text)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    assert repr(text) in info.value.message and info.value.message.startswith("--budget")
    for example in ("90s", "5m", "1h30m", "1.5h"):
        assert example in info.value.hint, example


def test_the_message_names_the_option_it_read():
    with pytest.raises(InvalidDurationError, match="--timeout 'later' is not a duration"):
        parse_duration("later", name="--timeout")


def test_counts_read_the_same_in_every_command():
    assert [format_count(n) for n in (140458, 43_810_000, 2.5e9, 999, 0, 12.5)] == [
        "140.46k", "43.81M", "2.50G", "999", "0", "12.5"]


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (5, 93, 3600 + 120, 5400, None)] == [
        "5s", "1m33s", "1h02m", "1h30m", "?"]
