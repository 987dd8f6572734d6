"""Every published row in the project's shared reference folder (``../shared/reference`` next to
the repository) is reproduced by the analytic counts, so rows added there later are checked too.
CI clones without that folder skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hw_models.test_analytic import GOLDEN_COLUMNS, assert_reproduces_published_row, reference_rows

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


def shared_rows() -> list:
    if not SHARED.is_dir():
        return [pytest.param(None, None, id="no-shared-reference")]
    params = []
    for path in sorted(SHARED.glob("*.csv")):
        rows = reference_rows(path)
        if rows and set(GOLDEN_COLUMNS) <= set(rows[0]):
            params += [
                pytest.param(path, row, id=f"{path.name}:{row['width_mult']}@{row['resolution']}") for row in rows
            ]
    return params or [pytest.param(None, None, id="no-golden-csv")]


@pytest.mark.parametrize("path, row", shared_rows())
def test_shared_reference_row_is_reproduced(path, row):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} does not exist (a clone without the shared reference folder)")
    if row is None:
        pytest.skip(f"no CSV in {SHARED} has the columns {GOLDEN_COLUMNS}")
    assert_reproduces_published_row(row)
