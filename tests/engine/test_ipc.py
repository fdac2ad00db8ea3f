"""The engine's local socket transport, on real Unix sockets."""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from engine.service import ipc


def _echo(request: dict[str, Any], send: ipc.Send) -> None:
    if request.get("boom"):
        raise RuntimeError("handler failed")
    for i in range(int(request.get("n", 1))):
        send({"i": i})
    if not request.get("hang_up"):
        send({"end": True})


def test_answers_stream_back_in_order(tmp_path: Path) -> None:
    server = ipc.SocketServer(ipc.socket_path(tmp_path), _echo)
    server.start()
    try:
        assert [a["i"] for a in ipc.request(tmp_path, {"n": 5})] == [0, 1, 2, 3, 4]
        assert (os.stat(ipc.socket_path(tmp_path)).st_mode & 0o777) == 0o600
    finally:
        server.close()
    assert not ipc.socket_path(tmp_path).exists()


def test_a_handler_error_is_an_answer_and_a_hang_up_is_closed(tmp_path: Path) -> None:
    server = ipc.SocketServer(ipc.socket_path(tmp_path), _echo)
    server.start()
    try:
        with pytest.raises(ipc.Closed):
            answers = list(ipc.request(tmp_path, {"boom": True}))
        answers = []
        with pytest.raises(ipc.Closed):
            for a in ipc.request(tmp_path, {"n": 2, "hang_up": True}):
                answers.append(a)
        assert answers == [{"i": 0}, {"i": 1}]
        first = next(ipc.request(tmp_path, {"boom": True}))
        assert "handler failed" in first["error"]
    finally:
        server.close()


def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ipc.Unavailable):
        next(ipc.request(tmp_path, {}))
    ipc.socket_path(tmp_path).write_text("")  # a stale file, not a socket
    with pytest.raises(ipc.Unavailable):
        next(ipc.request(tmp_path, {}))


def test_a_long_home_gets_a_short_socket_elsewhere(tmp_path: Path) -> None:
    home = tmp_path / ("deep" * 30)
    home.mkdir()
    path = ipc.socket_path(home)
    assert not path.is_relative_to(home) and len(os.fsencode(path)) <= 108
    assert ipc.socket_path(home) == path  # both sides compute the same place
    server = ipc.SocketServer(path, _echo)
    server.start()
    try:
        assert list(ipc.request(home, {"n": 1})) == [{"i": 0}]
    finally:
        server.close()


def test_many_callers_at_once(tmp_path: Path) -> None:
    server = ipc.SocketServer(ipc.socket_path(tmp_path), _echo)
    server.start()
    results: list[int] = []

    def call() -> None:
        results.append(len(list(ipc.request(tmp_path, {"n": 50}))))

    threads = [threading.Thread(target=call) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        server.close()
    assert results == [50] * 16


def test_a_caller_that_hangs_up_mid_stream_breaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    done = threading.Event()

    def chatty(request: dict[str, Any], send: ipc.Send) -> None:
        try:
            for i in range(10_000):
                send({"i": i, "pad": "x" * 1000})
        finally:
            done.set()

    server = ipc.SocketServer(ipc.socket_path(tmp_path), chatty)
    server.start()
    try:
        answers = ipc.request(tmp_path, {})
        assert isinstance(answers, Generator)  # so that it can be closed early
        assert next(answers)["i"] == 0
        answers.close()  # hang up with the engine still writing
        assert done.wait(10)
        server._handler = _echo
        assert list(ipc.request(tmp_path, {"n": 2})) == [{"i": 0}, {"i": 1}]
    finally:
        server.close()
    assert crashes == []
