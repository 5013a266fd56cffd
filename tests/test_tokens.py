"""Tokens: the live resume token shortcut is the token the class encodes;
positions are one sequence number per symbol; old versions are refused."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from candlewire.api.tokens import PageToken, Phase, ResumeToken, live_token
from candlewire.errors import InvalidArgument

positions = st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40).map(tuple)


@given(st.binary(min_size=8, max_size=8), st.integers(0, 2**32 - 1), positions)
def test_live_token_is_the_encoded_live_resume_token(
    epoch: bytes, request: int, vector: tuple[int, ...]
) -> None:
    token = live_token(epoch, request, vector)
    assert token == ResumeToken(epoch, request, Phase.LIVE, vector).encode()
    assert ResumeToken.decode(token) == ResumeToken(epoch, request, Phase.LIVE, vector)


@given(positions, st.integers(0, 2**16 - 1), st.none() | st.integers(-(2**63) + 1, 2**63 - 1))
def test_history_tokens_round_trip(vector: tuple[int, ...], index: int, cursor: int | None) -> None:
    token = ResumeToken(b"12345678", 7, Phase.HISTORY, vector, index, cursor)
    assert ResumeToken.decode(token.encode()) == token


def test_positions_are_compact() -> None:
    # 20 symbols at positions below 2**14: two bytes each.
    token = live_token(b"12345678", 1, [10_000] * 20)
    assert len(base64.urlsafe_b64decode(token + "==")) == 1 + 8 + 4 + 1 + 2 + 8 + 40 + 4


def _sealed(body: bytes) -> str:
    raw = body + struct.pack(">I", zlib.crc32(body))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_version_1_token_is_refused_naming_the_field() -> None:
    old = _sealed(struct.pack(">B8sIBQHq", 1, b"12345678", 1, Phase.LIVE, 5, 0, -(2**63)))
    with pytest.raises(InvalidArgument) as error:
        ResumeToken.decode(old)
    assert error.value.field == "resume_token"
    assert "older version" in str(error.value)


@pytest.mark.parametrize("tail", [b"\x80", b"\xff" * 10 + b"\x01"])
def test_truncated_or_oversized_positions_are_refused(tail: bytes) -> None:
    body = struct.pack(">B8sIBHq", 2, b"12345678", 1, Phase.LIVE, 0, -(2**63)) + tail
    with pytest.raises(InvalidArgument):
        ResumeToken.decode(_sealed(body))


@given(st.integers(0, 2**32 - 1), st.integers(-(2**63), 2**63 - 1))
def test_a_page_token_is_not_taken_for_an_old_resume_token(request: int, start: int) -> None:
    page = PageToken(request, start).encode()
    with pytest.raises(InvalidArgument) as error:
        ResumeToken.decode(page)
    assert error.value.field == "resume_token"
    assert "page token of GetCandles" in str(error.value)
    assert "older version" not in str(error.value)


@given(positions)
def test_a_resume_token_is_not_taken_for_a_page_token(vector: tuple[int, ...]) -> None:
    with pytest.raises(InvalidArgument) as error:
        PageToken.decode(live_token(b"12345678", 1, vector))
    assert error.value.field == "page_token"
    assert "resume token of a subscription" in str(error.value)
