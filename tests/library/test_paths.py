"""The safe path resolver: hostile inputs are refused with the right error, good ones resolve."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from dtaas.errors import BadRequest, Conflict, DtaasError, NotFound, PermissionDenied
from dtaas.library import paths

# (user path, error expected with must_exist=True and with must_exist=False). Names such
# as ``to_etc`` refer to the tree that the ``root`` fixture builds.
HOSTILE: list[tuple[str, type[DtaasError]]] = [
    # '..' in every disguise the string itself allows
    ("..", BadRequest),
    ("../", BadRequest),
    ("../x", BadRequest),
    ("../../x", BadRequest),
    ("../../../etc/passwd", BadRequest),
    ("a/..", BadRequest),
    ("a/../x", BadRequest),
    ("a/../../x", BadRequest),
    ("a/b/../../..", BadRequest),
    ("./../x", BadRequest),
    ("./..", BadRequest),
    (".././x", BadRequest),
    ("..//x", BadRequest),
    ("a//..//b", BadRequest),
    ("a/./../b", BadRequest),
    ("data/..", BadRequest),
    ("data/../data", BadRequest),
    ("data/sub/../../..", BadRequest),
    ("data/../to_etc", BadRequest),
    ("data/../../outside/secret.txt", BadRequest),
    ("../outside/secret.txt", BadRequest),
    ("x/../../../../../../etc/shadow", BadRequest),
    ("../" * 20 + "etc/passwd", BadRequest),
    ("data/file.txt/..", BadRequest),
    # percent-encoding left over after the one decode the HTTP layer does
    ("..%2f", BadRequest),
    ("..%2fx", BadRequest),
    ("..%2F..%2Fetc", BadRequest),
    ("%2e%2e/", BadRequest),
    ("%2e%2e/x", BadRequest),
    ("%2E%2E/x", BadRequest),
    ("%2e%2e%2f", BadRequest),
    ("%2e./x", BadRequest),
    (".%2e/x", BadRequest),
    ("%252e%252e/x", BadRequest),
    ("%252e%252e%252f", BadRequest),
    ("%252f", BadRequest),
    ("..%252f", BadRequest),
    ("a%2fb", BadRequest),
    ("a%5cb", BadRequest),
    ("..%5c", BadRequest),
    ("%5c..%5c", BadRequest),
    ("a%00b", BadRequest),
    ("%00", BadRequest),
    ("x%25", BadRequest),
    ("%c0%ae%c0%ae/x", BadRequest),
    ("..%c0%af", BadRequest),
    ("%e2%80%ae", BadRequest),
    ("data%2f..%2f..", BadRequest),
    ("%2fetc%2fpasswd", BadRequest),
    ("data/%2e%2e", BadRequest),
    ("%7e", BadRequest),
    # backslashes and UNC paths
    ("..\\x", BadRequest),
    ("..\\..\\x", BadRequest),
    ("a\\..\\..\\x", BadRequest),
    ("\\etc\\passwd", BadRequest),
    ("\\\\server\\share", BadRequest),
    ("\\\\?\\C:\\x", BadRequest),
    ("data\\file.txt", BadRequest),
    ("a/b\\c", BadRequest),
    ("\\", BadRequest),
    ("x\\", BadRequest),
    # absolute paths and drive letters
    ("/", BadRequest),
    ("/etc/passwd", BadRequest),
    ("/x", BadRequest),
    ("//x", BadRequest),
    ("///etc", BadRequest),
    ("/./x", BadRequest),
    ("/../x", BadRequest),
    ("C:", BadRequest),
    ("C:\\Windows", BadRequest),
    ("C:/Windows", BadRequest),
    ("c:x", BadRequest),
    ("Z:/", BadRequest),
    ("D:..", BadRequest),
    # NUL and other control characters
    ("a\x00b", BadRequest),
    ("\x00", BadRequest),
    ("a/\x00", BadRequest),
    ("..\x00", BadRequest),
    ("file.txt\x00.csv", BadRequest),
    ("a\nb", BadRequest),
    ("\n", BadRequest),
    ("a\rb", BadRequest),
    ("a\tb", BadRequest),
    ("\x1b[31m", BadRequest),
    ("a\x7f", BadRequest),
    ("\x01", BadRequest),
    ("\x1f", BadRequest),
    ("a\x85b", BadRequest),
    ("\x9b", BadRequest),
    ("data/\x08x", BadRequest),
    # bidi, zero-width and other format characters, separators, lone surrogates
    ("\u202e", BadRequest),
    ("a\u202etxt.exe", BadRequest),
    ("\u202d", BadRequest),
    ("\u202a", BadRequest),
    ("\u202b", BadRequest),
    ("\u202c", BadRequest),
    ("\u2066", BadRequest),
    ("\u2067", BadRequest),
    ("\u2068", BadRequest),
    ("\u2069", BadRequest),
    ("\u200b", BadRequest),
    ("a\u200bb", BadRequest),
    ("\u200c", BadRequest),
    ("\u200d", BadRequest),
    ("\u200e", BadRequest),
    ("\u200f", BadRequest),
    ("\ufeff", BadRequest),
    ("\ufeffdata", BadRequest),
    ("\u2060", BadRequest),
    ("\u00ad", BadRequest),
    ("\u061c", BadRequest),
    ("\u180e", BadRequest),
    ("..\u200b", BadRequest),
    ("\u2028", BadRequest),
    ("\u2029", BadRequest),
    ("\ud800", BadRequest),
    ("a\udcffb", BadRequest),
    ("\U000e0001", BadRequest),
    # Unicode look-alikes of '.', '/', '\', ':' and '%', and names that are not NFC
    ("\uff0e\uff0e", BadRequest),
    ("\uff0e\uff0e/x", BadRequest),
    ("\uff0e", BadRequest),
    (".\uff0e/x", BadRequest),
    ("\uff0e./x", BadRequest),
    ("\u2024\u2024/x", BadRequest),
    ("\u2024", BadRequest),
    ("\u2025/x", BadRequest),
    ("\u2026", BadRequest),
    ("\ufe52\ufe52", BadRequest),
    ("a\u2215..\u2215b", BadRequest),
    ("..\u2215x", BadRequest),
    ("\u2215etc\u2215passwd", BadRequest),
    ("..\u2044x", BadRequest),
    ("\u2044", BadRequest),
    ("\uff0f", BadRequest),
    ("a\uff0fb", BadRequest),
    ("\uff3c", BadRequest),
    ("..\uff3cx", BadRequest),
    ("\ufe68", BadRequest),
    ("\u2216", BadRequest),
    ("\u29f8", BadRequest),
    ("\u29f5", BadRequest),
    ("\u2571", BadRequest),
    ("\uff05\uff12\uff45", BadRequest),
    ("\ufe6a2e", BadRequest),
    ("C\uff1a", BadRequest),
    ("C\u2236x", BadRequest),
    ("\ufe55", BadRequest),
    ("\u2488", BadRequest),
    ("e\u0301", BadRequest),
    ("donne\u0301es.csv", BadRequest),
    ("A\u030a", BadRequest),
    ("\u212b", BadRequest),
    ("\u2126", BadRequest),
    # mixed encodings
    ("..%2f..\\x", BadRequest),
    ("%2e%2e\\x", BadRequest),
    ("\uff0e\uff0e%2f", BadRequest),
    ("..\u2215%2e%2e", BadRequest),
    ("%2e\uff0e/x", BadRequest),
    ("\\%2e%2e", BadRequest),
    # over-long names and paths
    ("a" * 256, BadRequest),
    ("\u00e9" * 128, BadRequest),
    ("\u6a21" * 86, BadRequest),
    ("x/" + "a" * 300, BadRequest),
    ("data/" + "z" * 256, BadRequest),
    ("a/" * 2049, BadRequest),
    ("a" * 5000, BadRequest),
    (("b" * 255 + "/") * 17, BadRequest),
    # tricks that are only literal names here: they must resolve to nothing, never climb
    ("..;/x", NotFound),
    ("..;x/y", NotFound),
    ("..../x", NotFound),
    (".../x", NotFound),
    (". ./x", NotFound),
    (".. /x", NotFound),
    ("%u002e%u002e/x", NotFound),
    ("file:///etc/passwd", NotFound),
    ("~/x", NotFound),
    ("~root/.ssh", NotFound),
    ("$HOME/x", NotFound),
    ("100%/x", NotFound),
    ("data/file.txt/x", NotFound),
    # symlinks that leave the root, as the final or an intermediate component
    ("to_etc", PermissionDenied),
    ("to_etc/passwd", PermissionDenied),
    ("to_etc/new.txt", PermissionDenied),
    ("to_parent", PermissionDenied),
    ("to_parent/outside/secret.txt", PermissionDenied),
    ("to_parent/root/data", PermissionDenied),
    ("to_sibling", PermissionDenied),
    ("to_sibling/secret.txt", PermissionDenied),
    ("to_sibling_abs", PermissionDenied),
    ("to_sibling_abs/secret.txt", PermissionDenied),
    ("prefix_trick", PermissionDenied),
    ("prefix_trick/decoy.txt", PermissionDenied),
    ("chain1", PermissionDenied),
    ("chain1/secret.txt", PermissionDenied),
    ("data/chain2", PermissionDenied),
    ("inner_a", PermissionDenied),
    ("inner_a/passwd", PermissionDenied),
    ("up3", PermissionDenied),
    ("up3/etc/passwd", PermissionDenied),
    ("data/up", PermissionDenied),
    ("data/up/x", PermissionDenied),
    ("data/sub/deep_out", PermissionDenied),
    ("data/sub/deep_out/secret.txt", PermissionDenied),
    ("dangling_out", PermissionDenied),
    ("dangling_rel", PermissionDenied),
    ("data/dangle", PermissionDenied),
    ("to_fs_root", PermissionDenied),
    ("to_fs_root/etc/passwd", PermissionDenied),
    ("to_proc", PermissionDenied),
    ("to_tmp_parent", PermissionDenied),
    ("climb_via_inside", PermissionDenied),
    ("./to_etc/", PermissionDenied),
    ("data//up//x", PermissionDenied),
    # targets that are neither files nor folders
    ("fifo", PermissionDenied),
    ("data/fifo2", PermissionDenied),
    ("link_to_fifo", PermissionDenied),
    ("sock", PermissionDenied),
    ("chardev", PermissionDenied),
    ("link_to_chardev", PermissionDenied),
    # symlink loops
    ("loop_a", BadRequest),
    ("loop_a/x", BadRequest),
    ("self_loop", BadRequest),
]

NEEDS_DEVICE = {"chardev", "link_to_chardev"}


def _case_id(index: int, path: str) -> str:
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9._-]", "_", ascii(path))[:40]


HOSTILE_PARAMS = [
    pytest.param(path, error, id=_case_id(index, path))
    for index, (path, error) in enumerate(HOSTILE)
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A library root full of traps, next to an ``outside`` folder it must never reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    decoy = tmp_path / "root_evil"  # shares the root's name as a string prefix
    decoy.mkdir()
    (decoy / "decoy.txt").write_text("decoy")
    base = tmp_path / "root"
    (base / "data" / "sub").mkdir(parents=True)
    (base / "data" / "file.txt").write_text("data")
    (base / "models").mkdir()
    (base / "models" / "tank.fmu").write_text("fmu")

    links = {
        "to_etc": "/etc",
        "to_parent": "..",
        "to_sibling": "../outside",
        "to_sibling_abs": str(outside),
        "prefix_trick": str(decoy),
        "chain1": "data/chain2",  # inside; only the second link leaves
        "data/chain2": "../../outside",
        "inner_a": "inner_b",  # inside, to an inside link that leaves
        "inner_b": "/etc",
        "up3": "../../..",
        "data/up": "../..",
        "data/sub/deep_out": "../../../outside",
        "dangling_out": "/nonexistent-dtaas-target",
        "dangling_rel": "../missing",
        "data/dangle": "../../nowhere",
        "to_fs_root": "/",
        "to_proc": "/proc/self/root",
        "to_tmp_parent": str(tmp_path),
        "climb_via_inside": "data/sub/../../..",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self_loop": "self_loop",
        "link_to_fifo": "fifo",
        "link_to_chardev": "chardev",
        # allowed: these stay inside
        "to_models": "models",
        "to_tank_abs": str(base / "models" / "tank.fmu"),
        "data/back": "../models/tank.fmu",
        "to_new_in_data": "data/new.csv",
        "self": ".",
    }
    for name, target in links.items():
        (base / name).symlink_to(target)
    os.mkfifo(base / "fifo")
    os.mkfifo(base / "data" / "fifo2")
    # A socket file outlives its socket; bind relative to stay under the 108-byte limit.
    with contextlib.chdir(base), socket.socket(socket.AF_UNIX) as server:
        server.bind("sock")
    with contextlib.suppress(PermissionError):
        os.mknod(base / "chardev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    return base


def _assert_refusal(error: DtaasError, *, expected: type[DtaasError], tmp_path: Path) -> None:
    assert type(error) is expected
    assert error.message
    assert str(tmp_path) not in error.message
    assert str(tmp_path.resolve()) not in error.message
    assert error.loc == ["path"]


def test_corpus_is_large_and_covers_every_error_class() -> None:
    assert len(HOSTILE) >= 150
    assert {error for _, error in HOSTILE} == {BadRequest, NotFound, PermissionDenied}


@pytest.mark.parametrize("must_exist", [True, False], ids=["must_exist", "may_be_missing"])
@pytest.mark.parametrize(("path", "expected"), HOSTILE_PARAMS)
def test_hostile_path_is_refused(
    root: Path, tmp_path: Path, path: str, expected: type[DtaasError], must_exist: bool
) -> None:
    if path in NEEDS_DEVICE and not (root / "chardev").exists():
        pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
    with pytest.raises(DtaasError) as caught:
        paths.resolve(root=root, path=path, must_exist=must_exist)
    _assert_refusal(caught.value, expected=expected, tmp_path=tmp_path)


@pytest.mark.parametrize(("path", "expected"), HOSTILE_PARAMS)
def test_hostile_path_is_refused_by_the_opener(
    root: Path, tmp_path: Path, path: str, expected: type[DtaasError]
) -> None:
    if path in NEEDS_DEVICE and not (root / "chardev").exists():
        pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
    with pytest.raises(DtaasError) as caught:
        paths.open_beneath(root=root, path=path, flags=os.O_RDONLY)
    _assert_refusal(caught.value, expected=expected, tmp_path=tmp_path)


def test_device_file_is_forbidden(tmp_path: Path) -> None:
    # The corpus skips its device cases where mknod is not allowed; this names the rule.
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
    with pytest.raises(PermissionDenied, match="character device"):
        paths.resolve(root=tmp_path, path="null")


def test_dot_dot_is_bad_request_even_when_it_stays_inside(root: Path) -> None:
    with pytest.raises(BadRequest, match=r"'\.\.'"):
        paths.resolve(root=root, path="data/../models")


def test_percent_escape_is_named_in_the_message(root: Path) -> None:
    with pytest.raises(BadRequest, match="'%2f'"):
        paths.resolve(root=root, path="data%2ffile.txt")


def test_bidi_override_is_named_in_the_message(root: Path) -> None:
    with pytest.raises(BadRequest, match="U\\+202E RIGHT-TO-LEFT OVERRIDE"):
        paths.resolve(root=root, path="report\u202etxt.exe")


def test_division_slash_lookalike_is_named_in_the_message(root: Path) -> None:
    with pytest.raises(BadRequest, match="U\\+2215 DIVISION SLASH"):
        paths.resolve(root=root, path="data\u2215file.txt")


def test_symlink_leaving_root_is_forbidden_and_named(root: Path) -> None:
    with pytest.raises(PermissionDenied, match="The symlink 'data/chain2' points outside"):
        paths.resolve(root=root, path="chain1/secret.txt")


def test_symlink_leaving_root_message_does_not_reveal_its_target(root: Path) -> None:
    with pytest.raises(PermissionDenied) as caught:
        paths.resolve(root=root, path="to_etc/passwd")
    assert "/etc" not in caught.value.message


def test_fifo_is_forbidden_and_named(root: Path) -> None:
    with pytest.raises(PermissionDenied, match="'fifo' is a FIFO"):
        paths.resolve(root=root, path="fifo")


def test_socket_is_forbidden_and_named(root: Path) -> None:
    with pytest.raises(PermissionDenied, match="'sock' is a socket"):
        paths.resolve(root=root, path="sock")


def test_missing_target_is_not_found_with_the_users_path(root: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as caught:
        paths.resolve(root=root, path="data//nope.csv")
    assert caught.value.message == "'data/nope.csv' does not exist."
    assert str(tmp_path) not in caught.value.message


def test_missing_parent_is_not_found_when_creating(root: Path) -> None:
    with pytest.raises(NotFound, match="the folder 'data/nope' does not exist"):
        paths.resolve(root=root, path="data/nope/new.csv", must_exist=False)


def test_file_used_as_folder_is_not_found(root: Path) -> None:
    with pytest.raises(NotFound, match=r"'data/file\.txt' is not a folder"):
        paths.resolve(root=root, path="data/file.txt/x")


# (user path, the real path relative to the root it must resolve to)
ACCEPTED = [
    ("data/file.txt", "data/file.txt"),
    ("data", "data"),
    ("data/", "data"),
    ("data/sub/", "data/sub"),
    ("data//file.txt", "data/file.txt"),
    ("./data/./file.txt", "data/file.txt"),
    ("", ""),
    (".", ""),
    ("./", ""),
    ("to_models/tank.fmu", "models/tank.fmu"),
    ("to_models", "models"),
    ("to_tank_abs", "models/tank.fmu"),
    ("data/back", "models/tank.fmu"),
    ("self", ""),
    ("self/self/data", "data"),
]


@pytest.mark.parametrize("must_exist", [True, False], ids=["must_exist", "may_be_missing"])
@pytest.mark.parametrize(("path", "relative"), ACCEPTED)
def test_safe_path_resolves_inside_root(
    root: Path, path: str, relative: str, must_exist: bool
) -> None:
    real = paths.resolve(root=root, path=path, must_exist=must_exist)
    assert real == root.resolve().joinpath(*relative.split("/") if relative else ())
    assert real.is_relative_to(root.resolve())
    assert paths.to_relative(root=root, real=real) == relative


@pytest.mark.parametrize(
    "name",
    [
        "donn\u00e9es.csv",
        "\u6a21\u578b.fmu",
        "...",
        "....",
        ".hidden",
        "my model v2.fmu",
        " leading space",
        "100% done.csv",
        "50%.txt",
        "a:b",
        "notes;v2",
        "\uff44\uff41\uff54\uff41",  # fullwidth letters: not path syntax
        "\u00e9" * 127,  # 254 bytes
        "a" * 255,
    ],
)
def test_legal_names_are_accepted(root: Path, name: str) -> None:
    (root / "data" / name).write_text("x")
    real = paths.resolve(root=root, path=f"data/{name}")
    assert real == root.resolve() / "data" / name
    assert paths.to_relative(root=root, real=real) == f"data/{name}"


def test_path_of_exactly_4096_bytes_is_accepted_lexically(root: Path) -> None:
    # 16 names of 255 bytes, each followed by '/': 4096 bytes, so only the walk objects.
    path = ("n" * 255 + "/") * 16
    assert len(path.encode()) == paths.MAX_PATH_BYTES
    with pytest.raises(NotFound):
        paths.resolve(root=root, path=path)


def test_new_file_in_existing_folder_resolves_when_it_may_be_missing(root: Path) -> None:
    real = paths.resolve(root=root, path="data/new.csv", must_exist=False)
    assert real == root.resolve() / "data" / "new.csv"
    assert not real.exists()


def test_dangling_inside_symlink_resolves_to_its_target_when_creating(root: Path) -> None:
    real = paths.resolve(root=root, path="to_new_in_data", must_exist=False)
    assert real == root.resolve() / "data" / "new.csv"


def test_dangling_inside_symlink_is_not_found_when_it_must_exist(root: Path) -> None:
    with pytest.raises(NotFound, match="'to_new_in_data' does not exist"):
        paths.resolve(root=root, path="to_new_in_data")


def test_root_given_through_a_symlink_is_resolved_first(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    real = paths.resolve(root=alias, path="data/file.txt")
    assert real == root.resolve() / "data" / "file.txt"


def test_to_relative_of_root_is_empty(root: Path) -> None:
    assert paths.to_relative(root=root, real=root.resolve()) == ""


def test_to_relative_uses_forward_slashes(root: Path) -> None:
    real = root.resolve() / "data" / "sub"
    assert paths.to_relative(root=root, real=real) == "data/sub"


@pytest.mark.parametrize(
    "make_real",
    [
        pytest.param(lambda root: root.parent / "outside", id="sibling"),
        pytest.param(lambda root: root.parent / "root_evil" / "decoy.txt", id="string-prefix"),
        pytest.param(lambda root: root / ".." / "outside", id="dot-dot"),
        pytest.param(lambda _root: Path("data/file.txt"), id="relative"),
        pytest.param(lambda _root: Path("/"), id="filesystem-root"),
    ],
)
def test_to_relative_outside_root_is_value_error(
    root: Path, make_real: Callable[[Path], Path]
) -> None:
    with pytest.raises(ValueError, match="not"):
        paths.to_relative(root=root, real=make_real(root.resolve()))


def _read_all(fd: int) -> str:
    with os.fdopen(fd, "r") as handle:
        return handle.read()


def test_open_beneath_reads_a_file(root: Path) -> None:
    fd = paths.open_beneath(root=root, path="data/file.txt", flags=os.O_RDONLY)
    assert _read_all(fd) == "data"


def test_open_beneath_follows_an_inside_symlink(root: Path) -> None:
    fd = paths.open_beneath(root=root, path="to_models/tank.fmu", flags=os.O_RDONLY)
    assert _read_all(fd) == "fmu"


def test_open_beneath_returns_a_blocking_descriptor(root: Path) -> None:
    fd = paths.open_beneath(root=root, path="data/file.txt", flags=os.O_RDONLY)
    try:
        assert os.get_blocking(fd)
    finally:
        os.close(fd)


def test_open_beneath_creates_a_new_file(root: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with os.fdopen(paths.open_beneath(root=root, path="data/new.csv", flags=flags), "w") as out:
        out.write("a,b\n")
    assert (root / "data" / "new.csv").read_text() == "a,b\n"


def test_open_beneath_exclusive_create_of_existing_file_is_conflict(root: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with pytest.raises(Conflict, match=r"'data/file\.txt' already exists"):
        paths.open_beneath(root=root, path="data/file.txt", flags=flags)


def test_open_beneath_writing_a_folder_is_conflict(root: Path) -> None:
    with pytest.raises(Conflict, match="'data' is a folder"):
        paths.open_beneath(root=root, path="data", flags=os.O_WRONLY)


def test_open_beneath_missing_file_is_not_found(root: Path) -> None:
    with pytest.raises(NotFound, match=r"'data/nope\.csv' does not exist"):
        paths.open_beneath(root=root, path="data/nope.csv", flags=os.O_RDONLY)


def test_open_beneath_root_opens_the_root_folder(root: Path) -> None:
    fd = paths.open_beneath(root=root, path="", flags=os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
        assert "data" in os.listdir(fd)  # noqa: PTH208  # a descriptor, not a path
    finally:
        os.close(fd)


def _swap_after_resolve(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Run ``swap`` right after the opener's own resolve: the race, made deterministic."""
    real_resolve = paths.resolve

    def resolve_then_swap(*, root: Path, path: str, must_exist: bool = True) -> Path:
        result = real_resolve(root=root, path=path, must_exist=must_exist)
        swap()
        return result

    monkeypatch.setattr(paths, "resolve", resolve_then_swap)


def test_folder_swapped_for_outside_symlink_after_resolve_is_forbidden(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "outside" / "file.txt").write_text("outside")

    def swap() -> None:
        (root / "data").rename(root / "data.old")
        (root / "data").symlink_to(tmp_path / "outside")

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(PermissionDenied, match="replaced by a symlink") as caught:
        paths.open_beneath(root=root, path="data/file.txt", flags=os.O_RDONLY)
    assert str(tmp_path) not in caught.value.message


def test_file_swapped_for_outside_symlink_after_resolve_is_forbidden(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swap() -> None:
        (root / "data" / "file.txt").unlink()
        (root / "data" / "file.txt").symlink_to(tmp_path / "outside" / "secret.txt")

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(PermissionDenied, match="replaced by a symlink"):
        paths.open_beneath(root=root, path="data/file.txt", flags=os.O_WRONLY | os.O_TRUNC)
    assert (tmp_path / "outside" / "secret.txt").read_text() == "secret"


def test_file_swapped_for_fifo_after_resolve_is_forbidden_without_blocking(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swap() -> None:
        (root / "data" / "file.txt").unlink()
        os.mkfifo(root / "data" / "file.txt")

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(PermissionDenied, match="is a FIFO"):
        paths.open_beneath(root=root, path="data/file.txt", flags=os.O_RDONLY)


def test_folder_swapped_for_outside_symlink_is_forbidden_for_the_parent_opener(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swap() -> None:
        (root / "data" / "sub").rename(root / "data" / "sub.old")
        (root / "data" / "sub").symlink_to(tmp_path / "outside")

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(PermissionDenied, match="replaced by a symlink"):
        paths.open_parent_beneath(root=root, path="data/sub/new.csv")
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret.txt"]


def test_open_parent_beneath_supports_atomic_replace(root: Path) -> None:
    dir_fd, name = paths.open_parent_beneath(root=root, path="data/file.txt")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        tmp_fd = os.open(".file.txt.tmp", flags, 0o644, dir_fd=dir_fd)
        with os.fdopen(tmp_fd, "w") as out:
            out.write("new")
        os.replace(".file.txt.tmp", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    assert name == "file.txt"
    assert (root / "data" / "file.txt").read_text() == "new"


def test_open_parent_beneath_writes_through_an_inside_symlink_to_its_target(root: Path) -> None:
    dir_fd, name = paths.open_parent_beneath(root=root, path="data/back")
    try:
        assert name == "tank.fmu"
        assert "tank.fmu" in os.listdir(dir_fd)  # noqa: PTH208  # a descriptor
    finally:
        os.close(dir_fd)


def test_open_parent_beneath_of_root_is_bad_request(root: Path) -> None:
    with pytest.raises(BadRequest, match="library root itself"):
        paths.open_parent_beneath(root=root, path="./")


def test_open_parent_beneath_missing_folder_is_not_found(root: Path) -> None:
    with pytest.raises(NotFound, match="the folder 'nope' does not exist"):
        paths.open_parent_beneath(root=root, path="nope/new.csv")
