"""The checker of upstream.py on its own (no mock, no proxy): it must catch what it is for."""

import json

import pytest

from upstream import assert_forwarded_exactly, usage_splice


class Sent:
    def __init__(self, body, headers=(), method="POST", path="/v1/chat/completions"):
        self.method, self.path, self.request_body = method, path, body
        self.request_headers = [(b"host", b"proxy"), (b"content-length", str(len(body)).encode()), *headers]


def got(body, headers=(), method="POST", path="/v1/chat/completions"):
    return {"method": method, "path": path, "headers": [("host", "mock"), *headers], "body": body}


BODY = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}'
MEMBER = b',"stream_options":{"include_usage":true}'


def test_same_bytes_pass_and_an_empty_body_is_named():
    headers = [(b"x-request-id", b"r1"), (b"authorization", b"Bearer k"), (b"traceparent", b"00-a-b-01")]
    assert_forwarded_exactly(Sent(BODY, headers), got(BODY, [("x-request-id", "r1"), ("authorization", "Bearer k")]))
    with pytest.raises(AssertionError, match="EMPTY body"):
        assert_forwarded_exactly(Sent(BODY), got(b""))
    with pytest.raises(AssertionError, match="first difference is at byte 60"):
        assert_forwarded_exactly(Sent(BODY), got(BODY[:60] + b"y" + BODY[61:]))


def test_headers_method_and_path():
    sent = Sent(BODY, [(b"X-Dup", b"1"), (b"x-dup", b"2"), (b"accept-encoding", b"gzip")])
    assert_forwarded_exactly(sent, got(BODY, [("x-dup", "1"), ("x-dup", "2"), ("accept-encoding", "identity")]))
    with pytest.raises(AssertionError, match="x-dup"):
        assert_forwarded_exactly(sent, got(BODY, [("x-dup", "2"), ("x-dup", "1")]))
    with pytest.raises(AssertionError, match="accept-encoding"):
        assert_forwarded_exactly(sent, got(BODY, [("x-dup", "1"), ("x-dup", "2"), ("accept-encoding", "br")]))
    with pytest.raises(AssertionError):
        assert_forwarded_exactly(Sent(BODY), got(BODY, path="/v1/chat/completions?x=1"))
    with pytest.raises(AssertionError):
        assert_forwarded_exactly(Sent(BODY), got(BODY, method="PUT"))
    # Named by the client's Connection header: per hop.
    assert_forwarded_exactly(Sent(BODY, [(b"connection", b"x-hop"), (b"x-hop", b"1")]), got(BODY))


def test_usage_splices():
    at = len(BODY) - 1
    spliced = BODY[:at] + MEMBER + BODY[at:]
    assert usage_splice(BODY, spliced) == (at, b"", MEMBER)
    with pytest.raises(AssertionError, match="changed on the way"):
        assert_forwarded_exactly(Sent(BODY), got(spliced))
    assert_forwarded_exactly(Sent(BODY), got(spliced), allow_usage_splice=True)

    options = b'{"model":"m","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}'
    inside = options.replace(b'{"include_obfuscation"', b'{"include_usage":true,"include_obfuscation"')
    assert usage_splice(options, inside)
    for old in (b"false", b"null"):
        before = b'{"stream":true,"stream_options":{"include_usage":' + old + b'},"messages":[]}'
        assert usage_splice(before, before.replace(old, b"true"))
    before = b'{"stream":true,"stream_options":null,"messages":[]}'
    assert usage_splice(before, before.replace(b"null", b'{"include_usage":true}'))

    # Not the splice: somewhere else, another value, two changes, a re-serialization.
    inside_a_string = BODY.index(b"xxx") + 1
    assert usage_splice(BODY, BODY[:inside_a_string] + MEMBER + BODY[inside_a_string:]) is None
    assert usage_splice(BODY, BODY[:1] + MEMBER[1:] + BODY[1:]) is None  # not JSON
    assert usage_splice(BODY, BODY[:at] + MEMBER.replace(b"true", b"false") + BODY[at:]) is None
    assert usage_splice(BODY, (BODY[:at] + MEMBER + BODY[at:]).replace(b"gpt-4o", b"gpt-4x")) is None
    stream_false = BODY.replace(b'"stream":true', b'"stream":false')
    assert usage_splice(stream_false, BODY) is None
    reserialized = json.dumps({**json.loads(BODY), "stream_options": {"include_usage": True}}).encode()
    assert usage_splice(BODY, reserialized) is None
    with pytest.raises(AssertionError, match="more than the usage splice"):
        assert_forwarded_exactly(Sent(BODY), got(reserialized), allow_usage_splice=True)
