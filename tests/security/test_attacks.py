"""The attack table of docs/security.md: each attack against a running server over real
loopback sockets, then a legitimate client that must still connect with nothing lost."""

from __future__ import annotations

import logging

import pytest
import trio

import reliablelink
from reliablelink._core import LinkParams, ResumeRequest
from reliablelink._core._frames import DATA_HEADER, HEADER, PREFACE, U64_FRAME, FrameType
from tests.helpers import KEY, KEYS, RunServer, echo, legitimate_exchange
from tests.security.raw import ERROR_BYTE, handshake, open_from, read_until_closed


async def test_wrong_key_and_unknown_client_get_the_same_answer(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        answers = []
        for client_id, key in (("agent-1", b"wrong" * 8), ("nobody", KEY)):
            with pytest.raises(reliablelink.AuthenticationError):
                async with reliablelink.connect(server.url, client_id=client_id, key=key):
                    pass
            stream = await open_from(server.url)
            with pytest.raises(reliablelink.AuthenticationError) as info:
                await handshake(stream, client_id, key)
            answers.append(str(info.value))
            await stream.aclose()
        assert answers[0] == answers[1], "unknown id and wrong key are indistinguishable"
        await legitimate_exchange(server.url)


async def test_brute_force_slows_down_then_locks_out_that_address_only(
    caplog: pytest.LogCaptureFixture, run_server: RunServer
) -> None:
    caplog.set_level(logging.INFO, "reliablelink.server")
    limits = {"failures_before_delay": 2, "failure_delay": 0.05, "failures_before_lockout": 6, "lockout": 60}
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", **limits)
        waits = []
        for attempt in range(6):
            stream = await open_from(server.url, "127.0.0.2")
            start = trio.current_time()
            with pytest.raises(reliablelink.AuthenticationError):
                await handshake(stream, "agent-1", b"guess%03d" % attempt * 4)
            waits.append(trio.current_time() - start)
            await stream.aclose()
        # trio.sleep never returns early, so these lower bounds cannot flake.
        assert all(w >= 0.05 * (i - 1) for i, w in enumerate(waits) if i >= 2), f"answers slow down: {waits}"
        # Locked out: the next connection is closed before a single byte is exchanged.
        stream = await open_from(server.url, "127.0.0.2")
        assert await read_until_closed(stream) == b"", "a locked-out address gets no preface, no challenge"
        await stream.aclose()
        assert any("locking out 127.0.0.2" in r.getMessage() for r in caplog.records)
        assert all(KEY.hex() not in r.getMessage() and "guess" not in r.getMessage() for r in caplog.records), (
            "no secrets in logs"
        )
        # A legitimate client from another address is unaffected, without any delay.
        await legitimate_exchange(server.url)


async def test_replayed_handshake_is_rejected(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        recorded: list[bytes] = []
        stream = await open_from(server.url)
        await handshake(stream, "agent-1", KEY, transcript=recorded)
        await stream.aclose()
        # The attacker sends the recorded HELLO and AUTH again: the server nonce is new.
        replay = await open_from(server.url, "127.0.0.3")
        await replay.send_all(recorded[0])
        challenge = b""
        while len(challenge) < len(PREFACE) + 5 + 32:  # preface + CHALLENGE with a fresh nonce
            challenge += await replay.receive_some(4096)
        await replay.send_all(recorded[1])
        answer = await read_until_closed(replay)
        assert ERROR_BYTE in answer and b"authentication failed" in answer
        await replay.aclose()
        await legitimate_exchange(server.url)


async def test_resume_hijack_is_rejected_and_the_real_session_is_intact(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        stream = await open_from(server.url)
        first = await handshake(stream, "agent-1", KEY)
        await stream.aclose()
        # The owner resumes twice: its token rotates each time.
        stream = await open_from(server.url)
        second = await handshake(stream, "agent-1", KEY, resume=ResumeRequest(first.session_id, first.token, 0))
        await stream.aclose()
        stream = await open_from(server.url)
        third = await handshake(stream, "agent-1", KEY, resume=ResumeRequest(first.session_id, second.token, 0))
        assert len({first.token, second.token, third.token}) == 3, "the resume token rotates on every attach"
        # `stream` stays attached: it is the real session under attack.
        attempts = {
            "stolen session id, another client's key": ("agent-2", KEYS["agent-2"], third.token),
            "old resume token": ("agent-1", KEY, first.token),
            "made-up token": ("agent-1", KEY, b"\x00" * 32),
            "current token without the key": ("agent-1", b"not the key" * 3, third.token),
        }
        for name, (client_id, key, token) in attempts.items():
            attacker = await open_from(server.url, "127.0.0.4")
            with pytest.raises(reliablelink.AuthenticationError):
                await handshake(attacker, client_id, key, resume=ResumeRequest(first.session_id, token, 0))
            await attacker.aclose()
            (session,) = server.sessions.values()
            assert session.link_state is reliablelink.LinkState.CONNECTED, f"{name}: the real session stays attached"
        # The real connection still carries the session: a message goes through and is acknowledged.
        await stream.send_all(DATA_HEADER.pack(17 + 5, FrameType.DATA, 1, 0) + b"hello")
        got = b""
        while DATA_HEADER.pack(17 + 5, FrameType.DATA, 1, 1)[:13] not in got:
            got += await stream.receive_some(4096)
        assert got.endswith(b"hello"), "the echo arrives on the legitimate connection"
        await stream.aclose()
        await legitimate_exchange(server.url)


async def test_oversized_length_closes_the_connection_before_allocating(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        for header in (HEADER.pack(2**32 - 1, FrameType.HELLO),):
            stream = await open_from(server.url)
            await stream.send_all(PREFACE + header)  # claims 4 GiB; the body never comes
            answer = await read_until_closed(stream)
            assert b"exceeds the limit" in answer
            await stream.aclose()
        stream = await open_from(server.url)
        await handshake(stream, "agent-1", KEY)
        await stream.send_all(HEADER.pack(2**31, FrameType.DATA))
        assert b"exceeds the limit" in await read_until_closed(stream)
        await stream.aclose()
        await legitimate_exchange(server.url)


@pytest.mark.parametrize("style", ["silent", "one byte at a time"])
async def test_slowloris_is_dropped_after_handshake_timeout(style: str, run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", handshake_timeout=0.5)
        stream = await open_from(server.url, "127.0.0.5")
        start = trio.current_time()
        if style == "silent":
            await read_until_closed(stream)
        else:
            payload = PREFACE + b"\x00\x00\x00\x20\x01" + b"x" * 40
            closed = False
            for byte in payload:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    closed = True
                    break
                await trio.sleep(0.1)
            assert closed, "the server hung up on the trickle"
        assert trio.current_time() - start >= 0.5
        await stream.aclose()
        await legitimate_exchange(server.url)


async def test_connection_flood_is_capped_per_address_and_in_total(run_server: RunServer) -> None:
    limits = {"max_connections_per_address": 10, "max_pending_handshakes": 25, "handshake_timeout": 1.0}
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", **limits)
        floods: list[trio.SocketStream] = []
        for source in ("127.0.0.6", "127.0.0.7", "127.0.0.8"):
            for _ in range(20):
                floods.append(await open_from(server.url, source))
        # Each accepted one got a preface; refused ones were closed at once with nothing.
        accepted = 0
        for stream in floods:
            with trio.move_on_after(2):
                data = await stream.receive_some(64)
                accepted += data.startswith(PREFACE)
        assert accepted == 25, f"{accepted} flood connections got a handshake (cap: 10 per address, 25 pending)"
        assert server._guard.pending <= 25
        # A legitimate client gets in once the flood's handshakes time out (it retries).
        await legitimate_exchange(server.url, connect_timeout=10, reconnect_backoff=(0.05, 0.5))
        for stream in floods:
            await stream.aclose()


HOSTILE = {
    "garbage preface": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "wrong protocol version": (False, b"RLNK\x00\x07\r\n"),
    "unknown frame type in the handshake": (False, PREFACE + HEADER.pack(1, 77)),
    "DATA before the handshake": (False, PREFACE + DATA_HEADER.pack(18, FrameType.DATA, 1, 0) + b"x"),
    "unknown frame type": (True, HEADER.pack(1, 99)),
    "ACK of a sequence never sent": (True, U64_FRAME.pack(9, FrameType.ACK, 10)),
    "sequence jump": (True, DATA_HEADER.pack(18, FrameType.DATA, 5, 0) + b"x"),
    "sequence going backwards": (
        True,
        DATA_HEADER.pack(18, FrameType.DATA, 1, 0) + b"x" + DATA_HEADER.pack(18, FrameType.DATA, 1, 0) + b"x",
    ),
    "truncated control frame": (True, HEADER.pack(3, FrameType.PING) + b"12"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_frames_get_protocol_error_and_the_server_keeps_running(name: str, run_server: RunServer) -> None:
    after_handshake, payload = HOSTILE[name]
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        stream = await open_from(server.url)
        if after_handshake:
            await handshake(stream, "agent-1", KEY)
        await stream.send_all(payload)
        answer = await read_until_closed(stream)
        assert ERROR_BYTE in answer, f"{name}: the server says why before closing"
        await stream.aclose()
        await legitimate_exchange(server.url)


async def test_truncated_stream_is_only_a_lost_connection(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        stream = await open_from(server.url)
        await handshake(stream, "agent-1", KEY)
        await stream.send_all(DATA_HEADER.pack(1017, FrameType.DATA, 1, 0) + b"only part of it")
        await stream.aclose()
        await legitimate_exchange(server.url)


async def test_absurd_client_proposals_are_capped(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(
            echo, "tcp://127.0.0.1:0", heartbeat_interval=3.0, max_inflight=1000, max_message_size=65536
        )
        absurd = LinkParams(
            heartbeat_interval=0.001,
            dead_after=0.002,
            max_message_size=2**32 - 65,
            max_inflight=2**32 - 1,
            max_inflight_bytes=2**63,
        )
        stream = await open_from(server.url)
        result = await handshake(stream, "agent-1", KEY, params=absurd)
        agreed = result.params
        assert agreed.heartbeat_interval >= 0.05, "heartbeat floor: the server will not ping 1000 times a second"
        assert agreed.dead_after >= 2 * agreed.heartbeat_interval
        assert agreed.max_inflight == 1000 and agreed.max_message_size == 65536, "the server's caps win"
        assert agreed.max_inflight_bytes == LinkParams().max_inflight_bytes
        await stream.aclose()
        await legitimate_exchange(server.url)


async def test_session_flood_by_one_client_is_capped(run_server: RunServer) -> None:
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", max_sessions_per_client=3)
        held = []
        for _ in range(3):
            stream = await open_from(server.url)
            await handshake(stream, "agent-1", KEY)
            held.append(stream)
        with pytest.raises(reliablelink.ConnectionFailed, match="too many sessions"):
            async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, connect_timeout=0.5):
                pass
        assert len(server.sessions) == 3
        # Another client is not affected by agent-1's cap...
        async with reliablelink.connect(server.url, client_id="agent-2", key=KEYS["agent-2"]) as session:
            await session.send(b"x")
            assert await session.receive() == b"x"
        # ...and agent-1 gets in again once one of its sessions is gone.
        for stream in held:
            await stream.aclose()
        for session in list(server.sessions.values()):
            if session.client_id == "agent-1":
                with trio.CancelScope() as cancelled:
                    cancelled.cancel()
                    await session.aclose()  # cancelled: closed at once, without waiting
        await legitimate_exchange(server.url, connect_timeout=5)
