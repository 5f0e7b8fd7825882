"""Property tests: the mapper never raises, and a bad setting is always one line, exit 64."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.environment import run_cli


class TestCliProperty:
    """Through the real command: a bad number always exits 64 with one line, no traceback."""

    @given(flag=st.sampled_from(["--deadline", "--expect-workers", "--ping-window", "--roundtrip-slow"]),
           raw=st.sampled_from(["abc", "-1", "0", "nan", "inf", "1e999", "5s", "", " ", "1,5", "0x10", "🙂"]))
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_bad_numbers(self, flag, raw, tmp_path_factory):
        if raw.strip() == "" and flag != "--deadline":
            return  # an empty value means "not given" for optional settings
        folder = tmp_path_factory.mktemp("cli")
        result = run_cli("run", "-b", "redis://127.0.0.1:1/0", flag, raw, cwd=folder, timeout=30)
        if raw.strip() == "":
            assert result.code in (2, 64)
            return
        assert result.code == 64, (flag, raw, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
