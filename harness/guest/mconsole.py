"""UML's management console: a datagram protocol on a unix socket per guest.

The host asks the running kernel to do things without a shell in the guest:
`cad` (Ctrl-Alt-Del: our init shuts down cleanly), `sysrq <key>`, `halt`.
Layout from arch/um/drivers/mconsole.h (magic, version 2, len, 512 data bytes).
"""
from __future__ import annotations

import os
import socket
import struct
import tempfile
from pathlib import Path

MAGIC = 0xCAFEBABE
VERSION = 2
MAX_DATA = 512


class MconsoleError(RuntimeError):
    pass


def command(sock_path: Path, text: str, timeout: float = 10.0) -> str:
    """Send one command, return the guest's reply text; raises MconsoleError if it says no."""
    data = text.encode()
    if len(data) >= MAX_DATA:
        raise ValueError(f"mconsole command too long: {text!r}")
    req = struct.pack(f"<III{MAX_DATA}s", MAGIC, VERSION, len(data), data)
    # The guest replies to the sender's address, so the client binds a socket of its own.
    with tempfile.TemporaryDirectory(prefix="svc-mc-") as d:
        me = os.path.join(d, "c")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(me)
            s.settimeout(timeout)
            s.sendto(req, str(sock_path))
            out, more = [], 1
            while more:
                reply = s.recv(12 + MAX_DATA)
                err, more, n = struct.unpack("<III", reply[:12])
                out.append(reply[12:12 + n].decode(errors="replace"))
            text_out = "".join(out)
            if err:
                raise MconsoleError(f"mconsole {text!r}: guest answered error {err}: {text_out}")
            return text_out
