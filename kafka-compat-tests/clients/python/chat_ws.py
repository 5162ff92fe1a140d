"""A browser-style chat client (Python's `websockets`) against Chorus's gateway.

usage: chat_ws.py HTTP_ADDR JWT_SECRET
Two users: a WebSocket send is acked and pushed to the other side, an HTTP send reaches a
WebSocket receiver, a reconnect with `since` gets exactly the messages sent while away,
and a bad token is refused with 401 before the upgrade.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request

import websockets

from common import expect_equal, fail

HTTP, SECRET = sys.argv[1:3]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(user):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def http_send(user, receiver, msg_id, content):
    body = json.dumps({"msg_id": msg_id, "sender_id": user, "receiver_id": receiver, "content": content}).encode()
    request = urllib.request.Request(
        f"http://{HTTP}/chat/messages",
        data=body,
        headers={"Authorization": f"Bearer {token(user)}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


async def next_of(ws, kind):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == kind:
            return frame


async def message(ws, msg_id):
    """Acks every pushed message (a sender's own devices get its messages too) until the
    one with `msg_id` comes."""
    while True:
        m = await next_of(ws, "message")
        await ws.send(json.dumps({"type": "ack", "msg_id": m["msg_id"]}))
        if m["msg_id"] == msg_id:
            return m


async def main():
    alice = await websockets.connect(f"ws://{HTTP}/ws?token={token('alice')}")
    bob = await websockets.connect(f"ws://{HTTP}/ws?token={token('bob')}")

    await alice.send(json.dumps({"type": "send_msg", "msg_id": "py-1", "recipient": "bob", "content": "hi from python"}))
    ack = await next_of(alice, "ack")
    expect_equal("ack", (ack["msg_id"], ack["sequence_number"]), ("py-1", 1))
    pushed = await next_of(bob, "message")
    expect_equal("pushed", (pushed["sender"], pushed["content"], pushed["sequence_number"]), ("alice", "hi from python", 1))
    await bob.send(json.dumps({"type": "ack", "msg_id": "py-1"}))

    status, receipt = http_send("bob", "alice", "py-2", "over http")
    expect_equal("http status", status, 201)
    pushed = await message(alice, "py-2")
    expect_equal("http to websocket", pushed["sequence_number"], receipt["sequence_number"])

    # bob goes away; alice writes three more; bob comes back and catches up from 2.
    await bob.close()
    for i in range(3, 6):
        http_send("alice", "bob", f"py-{i}", f"while away {i}")
    bob = await websockets.connect(f"ws://{HTTP}/ws?token={token('bob')}")
    await bob.send(json.dumps({"type": "subscribe", "stream_id": receipt["stream_id"], "since": 2}))
    got = []
    while len(got) < 3:
        m = await next_of(bob, "message")
        await bob.send(json.dumps({"type": "ack", "msg_id": m["msg_id"]}))
        got.append(m["sequence_number"])
    expect_equal("missed messages", sorted(got), [3, 4, 5])
    try:
        extra = json.loads(await asyncio.wait_for(bob.recv(), 1))
        if extra.get("type") == "message":
            fail("more than the missed messages: %r" % extra)
    except asyncio.TimeoutError:
        pass

    try:
        await websockets.connect(f"ws://{HTTP}/ws?token=not-a-token")
        fail("a bad token was accepted")
    except websockets.exceptions.InvalidStatus as e:
        expect_equal("bad token status", e.response.status_code, 401)
    await alice.close()
    await bob.close()
    print("ok")


asyncio.run(main())
