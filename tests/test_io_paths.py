"""Atomic writes are durable renames, paths read from files stay in their folder, outputs never land on inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeml import cli
from edgeml.errors import InputError
from edgeml.io import atomic_dir, atomic_write, write_bytes
from edgeml.paths import confined, refuse_overwrite


def test_atomic_write_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    write_bytes(tmp_path / "out.bin", b"12345")
    # the file's own fsync (5 bytes on disk) comes before the rename; the folder's fsync after it
    assert events[0] == ("fsync", 5) and events[1] == ("replace", "out.bin") and events[2][0] == "fsync"


def test_atomic_write_renames_a_new_inode_into_place(tmp_path):
    """A rename leaves other links to the old file untouched; copying over the target would write through them."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    link = tmp_path / "hardlink.bin"
    os.link(target, link)
    old_inode = target.stat().st_ino
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and link.read_bytes() == b"old"
    assert target.stat().st_ino != old_inode
    assert sorted(os.listdir(tmp_path)) == ["hardlink.bin", "out.bin"]


def test_atomic_write_cleans_up_on_keyboard_interrupt(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_dir_cleans_up_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "art") as d:
        (d / "a.txt").write_text("1")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "a/../../secret.bin", "..\\secret.bin",
                                      "C:\\secret.bin", "", "a\x00b"])
def test_confined_refuses_paths_that_leave_their_folder(tmp_path, location):
    (tmp_path / "model").mkdir()
    with pytest.raises(InputError):
        confined(tmp_path / "model", location)


def test_confined_refuses_a_symlink_leading_out(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(b"s")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "outside" / "secret.bin")
    with pytest.raises(InputError, match="outside"):
        confined(tmp_path / "model", "weights.bin")


def test_confined_accepts_plain_relative_paths(tmp_path):
    assert confined(tmp_path, "sub/w.bin") == tmp_path / "sub" / "w.bin"
    assert confined(tmp_path, "./w.bin") == tmp_path / "w.bin"


def test_refuse_overwrite_catches_same_path_same_inode_and_holding_folder(tmp_path):
    video = tmp_path / "in" / "v.avi"
    video.parent.mkdir()
    video.write_bytes(b"v")
    os.link(video, tmp_path / "alias.avi")
    for out in (video, tmp_path / "in" / ".." / "in" / "v.avi", tmp_path / "alias.avi", tmp_path / "in", tmp_path):
        with pytest.raises(InputError):
            refuse_overwrite(out, [video])
    refuse_overwrite(tmp_path / "in" / "out.csv", [video, None])  # a sibling is fine


def test_usage_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "synth"])  # missing positional
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--help" in err


def test_os_errors_are_one_line(capsys, monkeypatch):
    def boom(args):
        raise PermissionError(13, "Permission denied", "/nope/out.bin")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=boom)
    assert cli.main(["info"]) == 2
    assert capsys.readouterr().err == "edgeml: error: /nope/out.bin: Permission denied\n"


def test_stale_temps_of_a_killed_write_are_removed_and_nothing_else(tmp_path):
    from edgeml.io import remove_stale_temps

    (tmp_path / "art").mkdir()
    (tmp_path / ".art.x1.tmp").mkdir()  # a killed atomic_dir build
    (tmp_path / ".art.x2.old").mkdir()  # a killed replacement whose new folder is in place
    (tmp_path / ".out.bin.x3.tmp").write_bytes(b"half")
    keep = [".notes.tmp", ".art.keep", ".other.x4.tmp"]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    removed = remove_stale_temps(tmp_path, ["art", "out.bin"])
    assert sorted(p.name for p in removed) == [".art.x1.tmp", ".art.x2.old", ".out.bin.x3.tmp"]
    assert sorted(os.listdir(tmp_path)) == sorted(["art", *keep])


def test_an_old_folder_holding_the_only_copy_is_kept(tmp_path):
    from edgeml.io import remove_stale_temps

    (tmp_path / ".art.x2.old").mkdir()  # killed between moving the old output away and moving the new one in
    assert remove_stale_temps(tmp_path, ["art"]) == [] and (tmp_path / ".art.x2.old").is_dir()
