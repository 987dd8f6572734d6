from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_target_dir(tmp_path_factory, monkeypatch):
    """Never read or write the real ~/.config/invres-nas/targets from the tests."""
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path_factory.mktemp("user-targets")))
