"""Upstream engines behind small ``typing.Protocol`` interfaces: :mod:`.base`, whose public names (its
``__all__``) are re-exported here."""

from . import base
from .base import *  # noqa: F403

__all__ = list(base.__all__)
