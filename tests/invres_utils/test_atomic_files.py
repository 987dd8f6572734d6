from __future__ import annotations

import os

import pytest

from invres_utils.atomic_files import atomic_write_bytes, atomic_write_text, check_writable_file
from search_spaces import mobilenet_v2


def leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".tmp" in name)


def test_writes_atomically_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "spec.json"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "two\n")
    assert path.read_text() == "two\n" and leftovers(path.parent) == []
    atomic_write_bytes(path, b"\x89PNG\r\n")
    assert path.read_bytes() == b"\x89PNG\r\n" and leftovers(path.parent) == []


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "folder", "is a directory"),
        (lambda p: str(p / "folder") + os.sep, "is a directory"),
        (lambda p: p / "file.txt" / "spec.json", "choose a writable file path"),
        (lambda p: p / "file.txt" / "deeper" / "spec.json", "choose a writable file path"),
    ],
    ids=["directory", "trailing-separator", "under-a-file", "deep-under-a-file"],
)
def test_unwritable_paths_are_one_line_errors_and_leave_nothing(tmp_path, make, match):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("keep")
    path = make(tmp_path)
    writers = (lambda: atomic_write_text(path, "x"), lambda: atomic_write_bytes(path, b"x"))
    for write in (*writers, lambda: check_writable_file(path)):
        with pytest.raises(ValueError, match=match) as info:
            write()
        assert "\n" not in str(info.value) and os.fspath(path) in str(info.value)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "folder") == []
    assert (tmp_path / "file.txt").read_text() == "keep" and os.listdir(tmp_path / "folder") == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for write in (
            lambda: atomic_write_text(folder / "x.json", "x"),
            lambda: check_writable_file(folder / "x.json"),
        ):
            with pytest.raises(ValueError, match="cannot write .*x.json"):
                write()
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_temp_file_is_removed_whatever_fails(tmp_path, monkeypatch, error):
    def fail(*args):
        raise error

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ValueError if isinstance(error, OSError) else KeyboardInterrupt) as info:
        atomic_write_text(tmp_path / "spec.json", "x")
    if isinstance(error, OSError):
        assert (
            str(info.value)
            == f"cannot write {tmp_path / 'spec.json'}: No space left on device; choose a writable file path"
        )
    assert os.listdir(tmp_path) == []


def test_check_writable_file_accepts_new_nested_paths_and_creates_nothing(tmp_path):
    check_writable_file(tmp_path / "new" / "deeper" / "spec.json")
    check_writable_file(tmp_path / "spec.json")
    assert os.listdir(tmp_path) == []


def test_arch_to_json_reports_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        mobilenet_v2().to_json(tmp_path)
