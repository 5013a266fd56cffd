"""The README stays true to the code: settings table, quick start, architecture."""

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


def test_the_architecture_names_files_and_folders_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    package = root / "server" / "candlewire"
    section = README.split("## Architecture")[1].split("\n## ")[0]
    names = set(re.findall(r"\b(?:\w+/)*\w+\.(?:py|lua)\b", section))
    names |= set(re.findall(r"\b(?:\w+/)+(?=[\s`\"*<:,)])", section))
    assert {"flow/follow.py", "store/cached.py", "readiness.py", "store/redis/"} <= names
    missing = [
        name
        for name in sorted(names)
        if not (root / name).exists() and not any(package.rglob(name.rstrip("/").replace("*", "")))
    ]
    assert missing == []
