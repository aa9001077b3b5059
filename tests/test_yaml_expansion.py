"""YAML aliases that expand to billions of values ("billion laughs"): the settings, the
rules and an article's front matter are refused in one line, fast, naming the file; a
trial's ten-line maildesk.yaml held `config check` at 600 MB and rising."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import run_cli

from maildesk.config.expansion import LIMIT, too_large
from maildesk.config.load import ConfigError, load_settings
from maildesk.config.schema import Desk
from maildesk.kb.articles import KbError
from maildesk.kb.articles import load as load_articles
from maildesk.rules.load import RulesError
from maildesk.rules.load import load as load_rules

LEVELS = "abcdefghi"


def bomb(indent: str = "") -> str:
    """Nine lists of nine, each naming the one before: 9**9 (387 million) strings."""
    lines = [f'{indent}a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip(LEVELS, LEVELS[1:]):
        lines.append(f"{indent}{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_the_count_is_of_the_expansion_and_linear() -> None:
    shared = ["x"] * 10
    assert too_large({"a": [shared] * 10}, limit=200) is None           # 1 + 10 * 11 + 2
    assert "over 100 values" in (too_large({"a": [shared] * 10}, limit=100) or "")
    looped: list[object] = []
    looped.append(looped)
    assert "contains itself" in (too_large({"k": looped}) or "")
    deep: list[object] = []
    for _ in range(9):
        deep = [deep] * 9        # 9**9 paths, 10 containers: counted in microseconds
    start = time.perf_counter()
    assert too_large(deep) is not None and time.perf_counter() - start < 1.0
    assert too_large({"desk": {"queues": [{"name": f"q{i}"} for i in range(1000)]}}) is None
    assert LIMIT >= 10_000


def test_the_settings_are_refused_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(bomb())
    with pytest.raises(ConfigError, match="aliases"):
        load_settings(cfg)
    r = run_cli("config", "check", config=cfg, timeout=60)
    assert r.returncode == 78 and r.stderr.decode().count("\n") == 1, r.stderr
    assert f"{cfg}: its aliases (*name) expand to over" in r.stderr.decode()


def test_the_rules_are_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("- name: big\n  on: ticket.created\n  then: [{set: {queue: general}}]\n"
                     "  x:\n" + bomb("    "))
    with pytest.raises(RulesError) as e:
        load_rules([rules], Desk(), set())
    assert [p for p in e.value.problems if "aliases" in p] == [
        f"{rules}: its aliases (*name) expand to over {LIMIT:,} values: write the values "
        "out, or name fewer"]


def test_an_articles_front_matter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vpn.md").write_text("---\ntitle: VPN\n" + bomb() + "---\nRestart it.\n")
    with pytest.raises(KbError) as e:
        load_articles(tmp_path, {"general"})
    assert any("vpn.md:2:1: the front matter: its aliases" in p for p in e.value.problems), \
        e.value.problems
