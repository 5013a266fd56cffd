"""The README stays true to the code: settings table and quick start."""

from __future__ import annotations

import re
from pathlib import Path

from candlewire.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    documented = set(re.findall(r"^\| `CANDLEWIRE_([A-Z_]+)` \| `--([a-z-]+)`", README, re.M))
    actual = {(name.upper(), name.replace("_", "-")) for name in Settings.model_fields}
    assert documented == actual


def test_quick_start_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.split("## Quick start")[1], re.S)
    assert blocks[0].strip().endswith("candlewire serve")
    assert blocks[1].strip() == "bash .ci/run"
    assert "exec bash .ci/check" in (Path(__file__).resolve().parent.parent / ".ci/run").read_text()
