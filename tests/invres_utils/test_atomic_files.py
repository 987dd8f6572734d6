from __future__ import annotations

import os

import pytest

from invres_utils.atomic_files import atomic_folder, atomic_write_bytes, atomic_write_text, check_writable_file
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


@pytest.mark.parametrize("path", ["/proc/invres-x.json", "/proc/invres/deeper/x.json", "/sys/invres-x.json"])
def test_folders_nobody_can_write_are_refused_even_as_root(path):
    for check in (lambda: check_writable_file(path), lambda: atomic_write_text(path, "x")):
        with pytest.raises(ValueError, match="cannot write " + path) as info:
            check()
        assert "\n" not in str(info.value)


def test_atomic_folder_appears_whole(tmp_path):
    out = tmp_path / "new" / "deeper" / "kit"
    with atomic_folder(out) as building:
        assert not out.exists() and building.parent == tmp_path
        (building / "a.txt").write_text("a")
        (building / "sub").mkdir()
    assert (out / "a.txt").read_text() == "a" and (out / "sub").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["new"]
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as building:
        (building / "b.txt").write_text("b")
    assert os.listdir(tmp_path / "empty") == ["b.txt"]


@pytest.mark.parametrize("error", [ValueError("conversion failed"), KeyboardInterrupt(), OSError(28, "No space")])
def test_atomic_folder_leaves_nothing_when_the_block_fails(tmp_path, error):
    with pytest.raises(type(error)), atomic_folder(tmp_path / "new" / "kit") as building:
        (building / "half.txt").write_text("half")
        raise error
    assert os.listdir(tmp_path) == []


def test_atomic_folder_leaves_nothing_when_the_rename_fails(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    message = "cannot create folder .*kit: No space left on device"
    with pytest.raises(ValueError, match=message), atomic_folder(tmp_path / "new" / "kit") as building:
        (building / "a.txt").write_text("a")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "file.txt", "it is a file"),
        (lambda p: p / "full", "it exists and is not empty"),
        (lambda p: p / "file.txt" / "kit", "is not a writable directory"),
        (lambda p: "/proc/invres-kit", "/proc is not a writable directory"),
        (lambda p: "/sys/invres/kit", "/sys is not a writable directory"),
    ],
    ids=["file", "not-empty", "under-a-file", "proc", "sys"],
)
def test_atomic_folder_refuses_before_the_block_runs(tmp_path, make, match):
    (tmp_path / "file.txt").write_text("keep")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    before = sorted(os.listdir(tmp_path))
    path = make(tmp_path)
    with pytest.raises(ValueError, match=match) as info, atomic_folder(path):
        pytest.fail("the block must not run")
    assert str(info.value).startswith(f"cannot create folder {path}: ") and "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == before
