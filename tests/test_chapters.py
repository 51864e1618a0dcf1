"""Every chapter notebook (chapters/NN_*.ipynb) and every solutions notebook
(chapters/solutions/NN_solutions.ipynb) runs top to bottom without an error.

One test per notebook; a failing cell fails its test with the cell's source and traceback.
The notebooks run in a fresh 'python3' kernel (the venv's ipykernel) with their own folder as the
working directory, exactly as a student opens them: chapters/ for a chapter, chapters/solutions/
for its solutions (whose data paths therefore start with ../../).
"""
import json
import re
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((CHAPTERS / "solutions").glob("[0-9][0-9]_solutions.ipynb"))
CELL_TIMEOUT_S = 300
ANSI = re.compile(r"\x1b\[[0-9;]*m")     # IPython colours its tracebacks


def test_chapters_exist():
    assert NOTEBOOKS, f"no chapter notebooks found in {CHAPTERS}"


def test_every_chapter_has_its_solutions():
    chapters = {p.name[:2] for p in NOTEBOOKS}
    solved = {p.name[:2] for p in SOLUTIONS}
    assert chapters == solved, (f"chapters without solutions: {sorted(chapters - solved)}, "
                                f"solutions without a chapter: {sorted(solved - chapters)}")


def _markdown(path):
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_ends_with_summary_then_exercises_with_hints(path):
    text = _markdown(path)
    summary, exercises = text.find("\n## Summary"), text.find("\n## Exercises")
    assert 0 <= summary < exercises, f"{path.name}: needs '## Summary' before '## Exercises'"
    assert "Key shapes" in text[summary:exercises], f"{path.name}: the summary names no key shapes"
    items = re.findall(r"^\d+\. ", text[exercises:], flags=re.M)
    hints = re.findall(r"^\s+\*Hint:\*", text[exercises:], flags=re.M)
    assert items and len(hints) == len(items), \
        f"{path.name}: {len(items)} exercises but {len(hints)} hints"


def _run(path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:   # the cell's source and traceback
        failure = f"{path.name}: a cell raised\n{ANSI.sub('', str(err))}"
    except nbclient.exceptions.CellTimeoutError as err:
        failure = f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s\n{err}"
    if failure:   # outside the except block, so the error is not printed twice (chained)
        pytest.fail(failure, pytrace=False)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_runs(path):
    _run(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solutions_run(path):
    _run(path)
