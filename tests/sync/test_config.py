"""Channel settings merge field by field: one environment variable changes one field of one channel."""

from __future__ import annotations

import pytest

from sync.config import CHANNEL_CODES, CHANNEL_DEFAULTS, ChannelConfig, SyncSettings


@pytest.mark.parametrize("code", CHANNEL_CODES)
def test_one_variable_overrides_one_field_and_keeps_the_channels_defaults(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    documented = SyncSettings().channel(code)
    monkeypatch.setenv(f"C360_SYNC_{code.upper()}__BASE_URL", "http://127.0.0.1:9999")

    merged = SyncSettings().channel(code)

    assert merged.base_url == "http://127.0.0.1:9999"
    assert merged.model_dump(exclude={"base_url"}) == documented.model_dump(exclude={"base_url"})
    # The channel's own defaults, not ChannelConfig's generic ones, are what is kept.
    for field, value in CHANNEL_DEFAULTS[code].items():
        assert getattr(merged, field) == value
    # Other channels are untouched.
    for other in CHANNEL_CODES:
        if other != code:
            assert SyncSettings().channel(other) == ChannelConfig.model_validate(CHANNEL_DEFAULTS[other])


def test_documented_crons_and_page_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C360_SYNC_APP__TOKEN", "a-real-token")
    settings = SyncSettings()
    crons = {code: settings.channel(code).cron for code in CHANNEL_CODES}
    assert crons == {
        "tmall": "*/10 * * * *",
        "jd": "*/10 * * * *",
        "app": "*/5 * * * *",
        "wechat": "*/5 * * * *",
        "weibo": "*/30 * * * *",
        "pos": "0 * * * *",
    }
    assert settings.app.page_size == 500 and settings.pos.page_size == 500 and settings.tmall.page_size == 100
    assert settings.app.token == "a-real-token"


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C360_SYNC_JD__PAGE_SIZE", "0")
    with pytest.raises(ValueError, match=r"jd\.page_size"):
        SyncSettings()


def test_a_bad_sync_variable_is_one_line_before_any_database_starts(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("C360_")}
    env.update(C360_DATA_DIR=str(tmp_path), C360_SYNC_JD__PAGE_SIZE="0")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "c360"), "sync", "run", "--channel", "jd"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: invalid C360_SYNC_* configuration") and "jd.page_size" in line
    assert not (tmp_path / "pgdata").exists()  # the embedded server was never started
