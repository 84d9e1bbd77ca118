"""kombu's filesystem transport with atomic publishing, for the embedded broker.

kombu's own ``_put`` creates the message file and then writes it, while a consumer
may list and read the file in between and find it empty, which stops the Celery
worker ("Unrecoverable error: JSONDecodeError"). Here a message is written under a
name no consumer looks at and then renamed into place, so it appears whole.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps
from typing_extensions import override


class Channel(filesystem.Channel):
    @override
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's consumer matches "<anything>.<queue>.msg" after the
        # first dot, which ".tmp-..." never is.
        partial = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
