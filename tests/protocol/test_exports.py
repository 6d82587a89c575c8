"""The public API of ``protocol``: complete re-exports, and a package that stays free of I/O."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import protocol

SUBMODULES = ["audio", "chat", "device", "errors", "events", "session", "upload", "vlm", "wire"]


@pytest.mark.parametrize("name", [*SUBMODULES, "schema"])
def test_every_module_declares_all_and_defines_it(name: str) -> None:
    module = importlib.import_module(f"protocol.{name}")
    assert module.__all__, name
    assert len(set(module.__all__)) == len(module.__all__)
    for symbol in module.__all__:
        assert hasattr(module, symbol), f"protocol.{name}.__all__ names missing {symbol}"


def test_package_reexports_every_public_name() -> None:
    expected: set[str] = set()
    for name in SUBMODULES:
        module = importlib.import_module(f"protocol.{name}")
        clash = expected & set(module.__all__)
        assert not clash, f"protocol.{name} exports names already exported elsewhere: {clash}"
        expected |= set(module.__all__)
    assert set(protocol.__all__) == expected
    for symbol in expected:
        owner = next(
            importlib.import_module(f"protocol.{m}")
            for m in SUBMODULES
            if symbol in importlib.import_module(f"protocol.{m}").__all__
        )
        assert getattr(protocol, symbol) is getattr(owner, symbol)


def test_public_names_of_submodules_are_all_exported() -> None:
    # A public class or function defined in a module but left out of its __all__ is a mistake.
    for name in SUBMODULES:
        module = importlib.import_module(f"protocol.{name}")
        for symbol, value in vars(module).items():
            if symbol.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if isinstance(value, type) or callable(value):
                assert symbol in module.__all__, f"protocol.{name}.{symbol} is not in __all__"


def test_importing_protocol_keeps_io_libraries_out() -> None:
    code = (
        "import sys, protocol, protocol.schema\n"
        "banned = ('asyncio', 'quart', 'hypercorn', 'httpx', 'websockets', 'qwen_gateway')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in banned)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
