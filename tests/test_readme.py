"""Every command the README shows is one the package accepts, as written."""

import re
import shlex
from pathlib import Path

from opforce_tutorial.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The shell lines of the README's bash blocks (continuations joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def test_every_opforce_command_in_the_readme_parses():
    parser = build_parser()
    commands = [c for c in readme_commands() if c.startswith("opforce ")]
    assert len(commands) >= 15
    for command in commands:
        if command.endswith("..."):
            continue
        parser.parse_args(shlex.split(command)[1:])  # SystemExit (with the usage) on anything it refuses


def test_every_make_target_in_the_readme_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for command in readme_commands():
        if command.startswith("make "):
            assert command.split()[1] in targets, command


def test_the_readme_names_every_registered_flow_it_uses():
    from opforce_tutorial import pretrained

    names = set(re.findall(r"\b(ala2-[a-z]+(?:-[a-z]+)?(?:-[0-9.]+)?)\b", (ROOT / "README.md").read_text()))
    known = set(pretrained._specs())
    assert names and names <= known | {"ala2-histograms"}, names - known
