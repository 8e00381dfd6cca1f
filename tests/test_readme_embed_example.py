"""The README's embed/search example runs as written (in a scratch folder) and finds each person."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_embed_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    match = re.search(r"<!-- embed-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its embed-example block"
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README embed-example", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("faces/gallery/person0_112px.png")
    rows = [line for line in out if "->" in line]
    assert len(rows) == 5 and all(line.count("person") == 4 for line in rows)  # probe + top-3 gallery names
    assert (tmp_path / "faces" / "gallery.npy").is_file() and (tmp_path / "faces" / "gallery.json").is_file()
