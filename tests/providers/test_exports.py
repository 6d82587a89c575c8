"""The public API of ``qwen_gateway.providers``: the interfaces of ``base``, complete and re-exported."""

from __future__ import annotations

import qwen_gateway.providers as providers
from qwen_gateway.providers import base


def test_base_all_names_every_public_class_and_function() -> None:
    for symbol, value in vars(base).items():
        if symbol.startswith("_") or getattr(value, "__module__", None) != base.__name__:
            continue
        if isinstance(value, type) or callable(value):
            assert symbol in base.__all__, f"providers.base.{symbol} is not in __all__"


def test_package_reexports_exactly_the_interfaces() -> None:
    assert len(set(base.__all__)) == len(base.__all__)
    assert sorted(providers.__all__) == sorted(base.__all__)
    for symbol in base.__all__:
        assert getattr(providers, symbol) is getattr(base, symbol), symbol
