"""The guard in ``conftest.py``: a test that opens a network connection fails; loopback and
unix sockets still work; the Hugging Face libraries are told to stay offline.

Run: ``.venv/bin/python -m pytest tests/test_network_guard.py -q``
"""

from __future__ import annotations

import os
import re
import socket
import urllib.request

import pytest

# 192.0.2.0/24 and 2001:db8::/32 are reserved for documentation: nothing answers there,
# so even a broken guard could not reach a real host with them.
REMOTE = [("192.0.2.1", 80), ("2001:db8::1", 443, 0, 0), ("example.com", 443)]


@pytest.mark.parametrize("address", REMOTE, ids=["ipv4", "ipv6", "host-name"])
def test_a_remote_connection_is_refused_naming_the_address(address, network_attempts):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(RuntimeError, match=re.escape(f"connection to {address!r} was refused")):
        sock.connect(address)
    with pytest.raises(RuntimeError, match="only loopback and unix sockets are allowed"):
        socket.create_connection(address[:2], timeout=1)
    assert network_attempts == [repr(address), repr(address[:2])]
    network_attempts.clear()  # expected here: conftest must not fail this test for them


def test_a_swallowed_refusal_still_fails_the_test(network_attempts):
    """Libraries catch connection errors and fall back or retry; the attempt is recorded,
    and conftest fails the test after it ends unless the test clears the record."""
    try:
        urllib.request.urlopen("http://192.0.2.1/", timeout=1)
    except Exception:  # what a library with a fallback would do
        pass
    assert network_attempts == ["('192.0.2.1', 80)"]
    network_attempts.clear()


def test_loopback_and_unix_sockets_work(tmp_path, network_attempts):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=5) as client:
                conn, _ = server.accept()
                conn.sendall(b"hi")
                conn.close()
                assert client.recv(2) == b"hi"
    path = str(tmp_path / "unix.sock")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)
        conn, _ = server.accept()
        conn.sendall(b"ok")
        conn.close()
        assert client.recv(2) == b"ok"
    assert network_attempts == []


def test_hugging_face_runs_offline():
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
