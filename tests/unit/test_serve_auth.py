"""The credential check of ``serve`` (:mod:`celery_probe.serve.auth`), without a server.

The HTTP side (every route, real processes, Prometheus) is tests/integration/test_serve_auth.py;
here the decisions on header values that a client could send, and that both halves of a basic
credential are always compared.
"""

from __future__ import annotations

import base64
import hmac

import pytest

from celery_probe.serve import auth
from celery_probe.serve.auth import Credentials


def basic(user: bytes, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user + b":" + password)


TOKEN = b"t0ken.value-1~+/="
BOTH = Credentials.of(token=TOKEN, basic=(b"ops", "pa:ss wörd".encode()))


class TestAccepts:
    """Which Authorization values open the gate."""

    @pytest.mark.parametrize("header", [
        b"Bearer " + TOKEN, b"bearer " + TOKEN, b"BEARER  " + TOKEN + b" ",
        basic(b"ops", "pa:ss wörd".encode()), b"basic " + base64.b64encode("ops:pa:ss wörd".encode()),
    ])
    def test_the_right_credential(self, header):
        assert BOTH.accepts(header)

    @pytest.mark.parametrize("header", [
        None, b"", b"Bearer", b"Bearer ", TOKEN, b"Bearer " + TOKEN[:-1], b"Bearer " + TOKEN + b"x",
        b"Token " + TOKEN, b"Basic", b"Basic !!!", b"Basic " + base64.b64encode(b"ops"),
        basic(b"ops", b"pa:ss"), basic(b"OPS", "pa:ss wörd".encode()), basic(b"", b""),
        basic(b"op", b"s:pa:ss w\xc3\xb6rd"),  # the split is at the first colon: user "op" is wrong
        b"Basic " + base64.b64encode(b"ops:pa:ss w\xf6rd"),  # latin-1, not the UTF-8 configured
    ])
    def test_anything_else(self, header):
        assert not BOTH.accepts(header)

    def test_a_scheme_not_configured_is_refused_even_with_the_right_secret(self):
        token_only = Credentials.of(token=TOKEN)
        basic_only = Credentials.of(basic=(b"ops", TOKEN))
        assert not token_only.accepts(basic(b"ops", TOKEN))
        assert not basic_only.accepts(b"Bearer " + TOKEN)
        assert token_only.challenges() == [b'Bearer realm="celery-probe"']
        assert basic_only.challenges() == [b'Basic realm="celery-probe", charset="UTF-8"']

    def test_no_credential_is_not_a_configuration(self):
        with pytest.raises(ValueError):
            Credentials.of()


class TestComparison:
    """Constant-time: digests compared with hmac.compare_digest, user and password both, always."""

    @pytest.fixture
    def comparisons(self, monkeypatch):
        calls: list[tuple[bytes, bytes]] = []
        compare = hmac.compare_digest

        def counting(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return compare(a, b)

        monkeypatch.setattr(auth.hmac, "compare_digest", counting)
        return calls

    @pytest.mark.parametrize("header", [
        basic(b"ops", "pa:ss wörd".encode()), basic(b"wrong", "pa:ss wörd".encode()),
        basic(b"ops", b"wrong"), basic(b"wrong", b"wrong"), b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon"),
    ])
    def test_user_and_password_are_both_compared_whichever_is_wrong(self, comparisons, header):
        BOTH.accepts(header)
        assert len(comparisons) == 2, comparisons
        # Equal-length digests: the time says nothing of the secret's length either.
        assert all(len(a) == len(b) == 32 for a, b in comparisons)

    def test_the_token_is_compared_as_a_digest(self, comparisons):
        assert not BOTH.accepts(b"Bearer short")
        assert [(len(a), len(b)) for a, b in comparisons] == [(32, 32)]

    def test_the_secrets_are_not_kept(self):
        shown = repr(BOTH) + str(vars(BOTH))
        assert TOKEN.decode() not in shown and "pa:ss" not in shown and "ops" not in repr(BOTH)
