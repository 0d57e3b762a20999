"""systemd's readiness protocol (``Type=notify``): ``READY=1`` once the first sync and render are done,
``RELOADING=1`` around a SIGHUP reload, ``STOPPING=1`` on the way out. Nothing happens unless systemd set
``NOTIFY_SOCKET``; a message that cannot be sent is dropped (readiness must never stop the runner)."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` to ``$NOTIFY_SOCKET``; whether it was sent."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # "@": an abstract socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), target)
        return True
    return False
