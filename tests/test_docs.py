"""Every Python example in docs/ runs as written (in a scratch folder, with a scratch data dir)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLES = [
    pytest.param(code, id=f"{page.name}-{n}")
    for page in sorted(DOCS.glob("*.md"))
    for n, code in enumerate(BLOCK.findall(page.read_text()), start=1)
]


@pytest.mark.slow
@pytest.mark.parametrize("code", EXAMPLES)
def test_example_runs(code: str, tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("KEEL_CONFIG", None)
    if "src/keel/demo/corpus" in code:
        (tmp_path / "src" / "keel" / "demo").mkdir(parents=True)
        (tmp_path / "src" / "keel" / "demo" / "corpus").symlink_to(
            Path(__file__).parents[1] / "src" / "keel" / "demo" / "corpus"
        )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 8
