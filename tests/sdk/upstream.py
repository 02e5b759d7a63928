"""What the upstream (llmtrace-mock) received, and whether it is what the client sent.

Standard library only: tests/e2e imports it too (its virtualenv has httpx, not httpx2).
`proxyutil` re-exports both helpers.

- `upstream_received(mock_url, request_id)`: the requests the mock kept whose `x-request-id`
  is `request_id` (`GET /__mock/requests?request_id=...`), bodies decoded.
- `assert_forwarded_exactly(client_exchange, upstream_request)`: same method, path and query,
  body bytes and end-to-end headers as the client sent.
"""

import base64
import json
import time
import urllib.parse
import urllib.request

# Never compared: per hop (RFC 9110 §7.6.1, plus the legacy ones), set by the proxy on purpose
# (the upstream's Host, its own trace context), or framing that may change between HTTP/1.1
# and HTTP/2 or when the proxy holds the body.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
}
NOT_FORWARDED_AS_IS = {"host", "content-length", "traceparent", "tracestate", "baggage"}
CREDENTIALS = {"authorization", "x-api-key", "api-key"}
# Headers the proxy may replace with one value of its own: a request whose answer it may have
# to edit (an OpenAI chat completion: the usage chunk it asked for is removed) asks for the
# answer uncompressed (proxy/src/gateway.rs, upstream_request_filter).
MAY_REPLACE = {"accept-encoding": ["identity"]}

# What the proxy may splice into an OpenAI stream request that did not ask for usage:
# (bytes removed from the client's body, bytes put in their place), at one position.
USAGE_SPLICES = [
    (b"", b',"stream_options":{"include_usage":true}'),
    (b"", b'"stream_options":{"include_usage":true}'),
    (b"", b'"include_usage":true,'),
    (b"", b',"include_usage":true'),
    (b"", b'"include_usage":true'),
    (b"false", b"true"),
    (b"null", b"true"),
    (b"null", b'{"include_usage":true}'),
]


def upstream_received(mock_url, request_id, want=1, timeout=5.0):
    """The requests the mock received with `x-request-id: request_id`, oldest first.

    Waits up to `timeout` seconds for at least `want` of them (the mock records a request once
    its body is read, before answering: normally it is there already). Each is a dict with
    `method`, `path` (path and query), `headers` (list of (name, value), names lowercase) and
    `body` (bytes).
    """
    url = f"{mock_url.rstrip('/')}/__mock/requests?request_id={urllib.parse.quote(request_id, safe='')}"
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=30) as response:
            found = json.load(response)["requests"]
        if len(found) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out = []
    for r in found:
        body = base64.b64decode(r["body_base64"])
        assert len(body) == r["body_len"], r["body_len"]
        out.append({
            "method": r["method"],
            "path": r["path"],
            "headers": [(name.lower(), value) for name, value in r["headers"]],
            "body": body,
        })
    return out


def _text(x):
    return x.decode("latin-1") if isinstance(x, (bytes, bytearray)) else str(x)


def request_id_of(client_exchange):
    """The `x-request-id` the client sent (the tests send one with every request)."""
    ids = [_text(v) for k, v in client_exchange.request_headers if _text(k).lower() == "x-request-id"]
    assert len(ids) == 1, f"the client sent {len(ids)} x-request-id headers: the tests send one per request"
    return ids[0]


def _common_prefix(a, b):
    """Length of the longest common prefix (binary search over slice compares: fast on MBs)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a, b):
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:len(a) - lo] == b[len(b) - mid:len(b) - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _around(data, at, width=60):
    return data[max(0, at - width):at + width]


def describe_difference(sent, got):
    """A short account of how two bodies differ (never the whole of a 5 MB body)."""
    if not got and sent:
        return f"the upstream received an EMPTY body; the client sent {len(sent)} bytes"
    at = _common_prefix(sent, got)
    tail = _common_suffix(sent, got)
    return (
        f"client sent {len(sent)} bytes, upstream received {len(got)}; the first difference is at "
        f"byte {at} (common tail {tail} bytes)\n"
        f"  client:   ...{_around(sent, at)!r}...\n"
        f"  upstream: ...{_around(got, at)!r}..."
    )


def usage_splice(sent, got):
    """The (position, removed, inserted) that turns `sent` into `got`, if that is one of the
    usage splices: one contiguous change, located by bytes, whose JSON result is the client's
    body with `stream_options.include_usage` set to true and nothing else changed."""
    prefix = _common_prefix(sent, got)
    suffix = _common_suffix(sent, got)
    for removed, inserted in USAGE_SPLICES:
        if len(got) != len(sent) - len(removed) + len(inserted):
            continue
        tail = len(sent) - len(removed)  # bytes after the change: sent[i + len(removed):], i.e. tail - i of them
        for i in range(max(0, tail - suffix), min(prefix, tail) + 1):
            if (
                sent[i:i + len(removed)] == removed
                and got[i:i + len(inserted)] == inserted
                and sent[:i] == got[:i]
                and sent[i + len(removed):] == got[i + len(inserted):]
            ):
                try:
                    expected, result = json.loads(sent), json.loads(got)
                except ValueError:
                    return None
                options = expected.get("stream_options")
                expected["stream_options"] = {**(options or {}), "include_usage": True}
                if result == expected:
                    return i, removed, inserted
    return None


def _headers_by_name(headers, skip):
    by_name = {}
    for name, value in headers:
        name = _text(name).lower()
        if name not in skip:
            by_name.setdefault(name, []).append(_text(value))
    return by_name


def assert_forwarded_exactly(client_exchange, upstream_request, allow_usage_splice=False, credentials_replaced=False):
    """The upstream got what the client sent.

    `client_exchange`: anything with `method`, `path` (path and query as sent), `request_headers`
    (list of (name, value), str or bytes) and `request_body` (bytes); `upstream_request`: one
    item of `upstream_received`.

    - method, path and query unchanged (a single upstream without a base path);
    - the body byte for byte; with `allow_usage_splice`, it may instead be the client's body
      with `stream_options.include_usage: true` spliced in at one place (see USAGE_SPLICES);
    - every client header except hop-by-hop ones (and those the client's `Connection` names),
      host, content-length, traceparent, tracestate and baggage arrives with the same values in
      the same order; so do credentials unless `credentials_replaced` (a configured upstream key);
      `accept-encoding` may instead be `identity` (MAY_REPLACE).
    """
    sent = bytes(client_exchange.request_body)
    got = upstream_request["body"]
    where = f"{client_exchange.method} {client_exchange.path}"
    assert upstream_request["method"] == client_exchange.method, (where, upstream_request["method"])
    assert upstream_request["path"] == client_exchange.path, (where, upstream_request["path"])
    if got != sent:
        assert allow_usage_splice, f"{where}: the body changed on the way: {describe_difference(sent, got)}"
        assert usage_splice(sent, got), (
            f"{where}: the body differs by more than the usage splice: {describe_difference(sent, got)}"
        )

    skip = HOP_BY_HOP | NOT_FORWARDED_AS_IS | (CREDENTIALS if credentials_replaced else set())
    for name, value in client_exchange.request_headers:
        if _text(name).lower() == "connection":
            skip |= {t.strip().lower() for t in _text(value).split(",")}
    client_headers = _headers_by_name(client_exchange.request_headers, skip)
    upstream_headers = _headers_by_name(upstream_request["headers"], set())
    changed = {
        name: {"client": values, "upstream": upstream_headers.get(name)}
        for name, values in client_headers.items()
        if upstream_headers.get(name) not in (values, MAY_REPLACE.get(name))
    }
    assert not changed, f"{where}: headers not forwarded as sent: {changed}"
