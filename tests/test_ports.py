"""backend.ports: ports for stacks on "free ports" never come from the ephemeral range."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend import ports


@contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def test_ports_come_from_below_the_ephemeral_range_in_blocks_never_handed_out_twice() -> None:
    top = ports.ephemeral_range_start()
    chosen = [ports.free_port() for _ in range(60)]
    assert all(top - ports.WINDOW <= p and p + ports.BLOCK <= top for p in chosen)
    assert len(set(chosen)) == len(chosen)
    ordered = sorted(chosen)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) >= ports.BLOCK


def test_a_block_with_any_port_taken_is_skipped_and_none_left_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ports.free_port()  # a free block; the window is narrowed to it and the block after it
    monkeypatch.setattr(ports, "ephemeral_range_start", lambda: base + 2 * ports.BLOCK)
    monkeypatch.setattr(ports, "WINDOW", 2 * ports.BLOCK)
    with listening(base + ports.BLOCK + 2):  # the second block's third port (a worker's offset)
        assert {ports.free_port() for _ in range(5)} == {base}
        with listening(base + 1), pytest.raises(RuntimeError, match="no 4 consecutive free ports"):
            ports.free_port()


def test_a_block_another_process_reserved_is_passed_over_while_others_are_free(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base = ports.free_port()
    while not all(ports.port_is_free("127.0.0.1", base + ports.BLOCK + i) for i in range(ports.BLOCK)):
        base = ports.free_port()  # a free block with a free block after it
    monkeypatch.setattr(ports, "ephemeral_range_start", lambda: base + 2 * ports.BLOCK)
    monkeypatch.setattr(ports, "WINDOW", 2 * ports.BLOCK)
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path)
    assert ports.reserve(base, directory=tmp_path)  # what another process choosing now would do

    assert ports.free_port() == base + ports.BLOCK
    assert sorted(p.name.split(".")[0] for p in tmp_path.iterdir()) == [str(base), str(base + ports.BLOCK)]


def test_a_reservation_holds_for_one_to_two_leases_and_old_ones_are_removed(tmp_path: Path) -> None:
    lease = ports.LEASE_S
    assert ports.reserve(7000, now=0.0, directory=tmp_path)
    assert not ports.reserve(7000, now=lease - 1, directory=tmp_path)  # the same period
    assert not ports.reserve(7000, now=lease + 1, directory=tmp_path)  # the next one: still held
    assert ports.reserve(7004, now=lease + 1, directory=tmp_path)  # another block is free to take
    assert ports.reserve(7000, now=2 * lease + 1, directory=tmp_path)  # expired: taken again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7000.2", "7004.1"]


def test_without_a_place_to_keep_reservations_every_block_counts_as_reserved_by_us(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert ports.reserve(7000, directory=not_a_directory)


def test_the_ephemeral_range_is_read_from_proc_or_defaults_to_linux(tmp_path: Path) -> None:
    good = tmp_path / "range"
    good.write_text("40000\t60999\n")
    assert ports.ephemeral_range_start(good) == 40000
    (tmp_path / "bad").write_text("")
    assert ports.ephemeral_range_start(tmp_path / "bad") == 32768
    assert ports.ephemeral_range_start(tmp_path / "missing") == 32768
