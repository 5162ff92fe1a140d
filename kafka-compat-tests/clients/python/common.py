"""Checks shared by the Python client scripts."""

import sys
import time

HEADERS = [("source", b"compat"), ("trace", b"t-1")]


def fail(message):
    print("FAIL:", message, flush=True)
    sys.exit(1)


def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    fail("timed out waiting for " + what)


def records_for(codec):
    """What each codec's round trip sends: a keyed record with headers, a null value,
    and a record without a key. Tuples of (key, value, headers)."""
    c = codec.encode()
    return [
        (b"key-" + c, b"value-" + c * 50, HEADERS),
        (b"null-" + c, None, []),
        (None, b"no-key-" + c, []),
    ]


def expect_equal(what, got, want):
    if got != want:
        fail("%s:\n  got  %r\n  want %r" % (what, got, want))
