"""`maildesk init DIR`: a commented configuration to start from."""
from __future__ import annotations

from pathlib import Path

from ..notify.templates import builtin_templates_dir


def example_config_dir() -> Path:
    """Installed wheels carry config/ as maildesk/_config; a checkout has ../config."""
    here = Path(__file__).resolve().parent.parent
    installed = here / "_config"
    return installed if installed.is_dir() else here.parent / "config"


def write_starter(directory: Path, force: bool = False) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    src = example_config_dir()
    targets = {
        directory / "maildesk.yaml": (src / "maildesk.yaml").read_text(),
        directory / "rules.yaml": (src / "rules.yaml").read_text(),
        directory / "templates" / "README.txt": _templates_readme(),
    }
    if not force:
        for path in targets:
            if path.exists():
                raise FileExistsError(0, "exists", str(path))
    written = []
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _templates_readme() -> str:
    names = sorted(p.name for p in builtin_templates_dir().glob("*.j2"))
    return (
        "Templates placed here replace the built-in ones of the same name, file by file.\n"
        "Copy one from the list below (maildesk's templates/ folder), change it, and run\n"
        "`maildesk config check`. A notification NAME is NAME.subject.j2, NAME.txt.j2\n"
        "and, optionally, NAME.html.j2.\n\n" + "\n".join(names) + "\n")

