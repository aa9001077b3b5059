"""Reading maildesk.yaml into Settings, with errors that name file, line and key.

ruamel.yaml keeps the line and column of every key, so a pydantic error path
like ('smtp', 'port') becomes `maildesk.yaml:7:9: smtp.port: ...`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from ..errors import MaildeskError
from .expansion import too_large
from .schema import Settings

ENV_VAR = "MAILDESK_CONFIG"


class ConfigError(MaildeskError):
    """A configuration a person must fix; str() is one line per problem."""


def _position(doc: Any, loc: tuple[Any, ...], at_value: bool) -> tuple[int, int] | None:
    """Line and column (1-based) of the deepest key of loc that exists in doc (or its value)."""
    node, pos = doc, None
    for depth, key in enumerate(loc):
        lc = getattr(node, "lc", None)
        try:
            if isinstance(key, int) and isinstance(node, list):
                if lc is not None:
                    pos = lc.item(key)
                node = node[key]
            elif isinstance(node, dict) and key in node:
                if lc is not None:
                    last = depth == len(loc) - 1
                    pos = lc.value(key) if last and at_value else lc.key(key)
                node = node[key]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    if pos is None:
        return None
    return pos[0] + 1, pos[1] + 1


def _describe(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting (check the spelling; `maildesk init` writes every key)"
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        msg = f"{msg} (got {err['input']!r})"
    return f"{loc}: {msg}" if loc else msg


def load_settings(path: Path | None) -> Settings:
    """The settings from path, or the embedded default when path is None."""
    if path is None:
        return Settings().resolved(Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {e.problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:1:1: the file must be a mapping of settings")
    if (why := too_large(doc)) is not None:
        raise ConfigError(f"{path}: {why}")
    try:
        settings = Settings.model_validate(_plain(doc))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            pos = _position(doc, tuple(err["loc"]), at_value=err["type"] != "extra_forbidden")
            where = f"{path}:{pos[0]}:{pos[1]}" if pos else f"{path}"
            lines.append(f"{where}: {_describe(err)}")
        raise ConfigError("\n".join(lines)) from None
    return settings.resolved(path.resolve().parent)


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists for pydantic."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def config_path(option: str | None) -> Path | None:
    """--config wins over MAILDESK_CONFIG; neither means the embedded default."""
    value = option or os.environ.get(ENV_VAR)
    return Path(value) if value else None
