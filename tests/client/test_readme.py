"""The README's Python client section stays true to the client."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import candlewire_client
from candlewire_client import ClientOptions
from candlewire_client.options import DEFAULT_TARGET, ENV_API_KEY, ENV_BEARER_TOKEN, ENV_TARGET

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECTION = README.split("\n## Python client\n")[1].split("\n## ")[0]
EXAMPLES = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def test_examples_compile_and_import_what_exists() -> None:
    assert len(EXAMPLES) >= 5
    for source in EXAMPLES:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "candlewire_client":
                for alias in node.names:
                    assert alias.name in candlewire_client.__all__, alias.name


def test_install_commands_and_the_pandas_extra() -> None:
    assert "pip install ./clients/python " in SECTION
    assert "pip install './clients/python[pandas]'" in SECTION
    first = SECTION.index("```python")
    assert "to_pandas()" in EXAMPLES[0]
    assert "[pandas]" in SECTION[SECTION.rindex("###", 0, first) : first]  # said before it
    extras = (ROOT / "clients/python/pyproject.toml").read_text()
    assert 'pandas = ["pandas' in extras


def test_continuity_example_handles_the_event() -> None:
    handling = [s for s in EXAMPLES if "isinstance(event, ContinuityLost)" in s]
    assert len(handling) >= 2
    assert "ContinuityLost(series, since, reason)" in SECTION


def test_environment_and_options_are_documented() -> None:
    rows = re.findall(r"^\| `(CANDLEWIRE_[A-Z_]+)` \| `(\w+)`", SECTION, re.M)
    assert rows == [
        (ENV_TARGET, "target"),
        (ENV_API_KEY, "api_key"),
        (ENV_BEARER_TOKEN, "bearer_token"),
    ]
    assert f"| `{DEFAULT_TARGET}` |" in SECTION
    connecting = SECTION.split("### Connecting")[1].split("###")[0]
    example = next(s for s in EXAMPLES if s.startswith("Client(\n"))
    shown = set(re.findall(r"(\w+)=", example))
    assert set(ClientOptions.__annotations__) <= shown
    assert "ClientOptions" in connecting
