"""Test helper: the shape every chapter notebook keeps (narrative, calls and plots)."""

import json
from pathlib import Path

BOOK = Path(__file__).parent.parent / "book"


def calls_and_plots(name: str, glue_prefixes: tuple[str, ...], max_code_lines: int = 100) -> str:
    """Check that ``book/<name>`` holds at most ``max_code_lines`` code lines, builds no table by hand, and
    hides every cell made only of lines starting with ``glue_prefixes``; return its markdown text."""
    nb = json.loads((BOOK / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    lines = [line for c in code for line in "".join(c["source"]).splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= max_code_lines, len(lines)
    assert not any("pd.DataFrame(" in line or "rows.append" in line for line in lines)
    for c in code:
        source = "".join(c["source"])
        if all(line.startswith(glue_prefixes) or not line.strip() for line in source.splitlines()):
            assert {"remove-input", "hide-input"} & set(c["metadata"].get("tags", [])), source[:80]
    return "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
