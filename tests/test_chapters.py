"""Every chapter notebook (chapters/NN_*.ipynb) runs top to bottom without an error.

One test per notebook; a failing cell fails its test with the cell's source and traceback.
The notebooks run in a fresh 'python3' kernel (the venv's ipykernel) with chapters/ as the
working directory, exactly as a student opens them.
"""
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 300
ANSI = re.compile(r"\x1b\[[0-9;]*m")     # IPython colours its tracebacks


def test_chapters_exist():
    assert NOTEBOOKS, f"no chapter notebooks found in {CHAPTERS}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_runs(path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(CHAPTERS)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:   # the cell's source and traceback
        failure = f"{path.name}: a cell raised\n{ANSI.sub('', str(err))}"
    except nbclient.exceptions.CellTimeoutError as err:
        failure = f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s\n{err}"
    if failure:   # outside the except block, so the error is not printed twice (chained)
        pytest.fail(failure, pytrace=False)
