"""Tokens: the live resume token shortcut is the token the class encodes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from candlewire.api.tokens import Phase, ResumeToken, live_token


@given(st.binary(min_size=8, max_size=8), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_live_token_is_the_encoded_live_resume_token(
    epoch: bytes, request: int, position: int
) -> None:
    token = live_token(epoch, request, position)
    assert token == ResumeToken(epoch, request, Phase.LIVE, position).encode()
    assert ResumeToken.decode(token) == ResumeToken(epoch, request, Phase.LIVE, position)
