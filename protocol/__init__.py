"""The typed, pure protocol layer of qwen-gateway.

Types of every message on the wire (:mod:`~protocol.chat`, :mod:`~protocol.audio`, :mod:`~protocol.vlm`,
:mod:`~protocol.events`), the codec (:mod:`~protocol.wire`), packet assembly (:mod:`~protocol.upload`), the
session machines (:mod:`~protocol.session`), errors (:mod:`~protocol.errors`) and the contract generator
(:mod:`protocol.schema`, imported on demand). Imports only the standard library and msgspec; no I/O.
"""

from .audio import *  # noqa: F403
from .audio import __all__ as _audio_all
from .chat import *  # noqa: F403
from .chat import __all__ as _chat_all
from .device import *  # noqa: F403
from .device import __all__ as _device_all
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .session import *  # noqa: F403
from .session import __all__ as _session_all
from .upload import *  # noqa: F403
from .upload import __all__ as _upload_all
from .vlm import *  # noqa: F403
from .vlm import __all__ as _vlm_all
from .wire import *  # noqa: F403
from .wire import __all__ as _wire_all

__all__ = [
    *_audio_all,
    *_chat_all,
    *_device_all,
    *_errors_all,
    *_events_all,
    *_session_all,
    *_upload_all,
    *_vlm_all,
    *_wire_all,
]
