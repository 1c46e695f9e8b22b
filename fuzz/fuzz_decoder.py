"""Coverage-guided fuzzing of the wire decoder and the server handshake with atheris.

Run ``nox -s fuzz`` (or ``python fuzz/fuzz_decoder.py -max_total_time=60``). The invariant:
any input is parsed or rejected with ProtocolError / AuthenticationError; anything else is a
crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from reliablelink import AuthenticationError, ProtocolError
    from reliablelink._core import LinkParams, ServerHandshake, SessionCore
    from reliablelink._core._frames import HANDSHAKE_FRAME_LIMIT, PREFACE, FrameReader

PARAMS = LinkParams(max_message_size=4096, max_inflight=64, max_inflight_bytes=65536)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    try:
        if mode == 0:
            FrameReader(HANDSHAKE_FRAME_LIMIT).feed(PREFACE + body)
        elif mode == 1:
            server = ServerHandshake(PARAMS)
            if isinstance(server.receive_data(PREFACE + body), str):
                server.set_key(b"k" * 32)
        else:
            core = SessionCore(PARAMS)
            core.attach(PARAMS, 0, 0.0)
            core.receive_data(body, 0.0)
            assert len(core.inbox) <= PARAMS.max_inflight
    except (ProtocolError, AuthenticationError):
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
