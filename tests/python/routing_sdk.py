"""Routing and failover scenarios with the official openai SDK, in one process.

Environment: OPENAI_BASE_URL is either a provider's own URL reached through HTTPS_PROXY
(forward-proxy mode; SSL_CERT_FILE trusts the proxy CA) or the proxy's gateway
(http://127.0.0.1:PORT/v1). MODE names the mode; it goes into every prompt, so the Rust
test can find each scenario's requests in the mock providers' records ("<scenario> MODE").

Faults are injected per request with the mocks' `x-mock-fault` header; `mock=primary` aims
one at the mock named "primary" only, although the header reaches every target. The SDK
never retries (max_retries=0): every retry seen upstream is the proxy's own.

Prints one JSON object: what the SDK returned or raised, per scenario.
"""
import time

marks = [("start", time.monotonic())]

import json  # noqa: E402
import os  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import openai  # noqa: E402

MODE = os.environ["MODE"]
client = openai.OpenAI(
    api_key="sk-client-own-key",
    organization="org-client",
    base_url=os.environ["OPENAI_BASE_URL"],
    max_retries=0,
)
out = {}


def mark(name):
    marks.append((name, time.monotonic()))


mark("import")


def tag(scenario):
    return f"{scenario} {MODE}"


def create(model, content, fault=None, **kw):
    headers = {"x-mock-fault": fault} if fault else None
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], extra_headers=headers, **kw
    )


def answer(model, content, fault=None, **kw):
    """A JSON answer: who answered and the text; or the error status, code and Retry-After."""
    started = time.monotonic()
    try:
        r = create(model, content, fault, **kw)
        return {
            "by": r.system_fingerprint,
            "content": r.choices[0].message.content,
            "seconds": time.monotonic() - started,
        }
    except openai.APIStatusError as e:
        return {
            "status": e.status_code,
            "code": e.code,
            "retry_after": e.response.headers.get("retry-after"),
            "seconds": time.monotonic() - started,
        }


def by(model, content, fault=None, **kw):
    return answer(model, content, fault, **kw).get("by")


def stream(model, content, fault=None):
    """A streamed answer: text, who answered, chunks; or the error the SDK raised mid-stream."""
    res = {"text": "", "by": None, "chunks": 0, "error": None}
    try:
        for chunk in create(model, content, fault, stream=True):
            res["chunks"] += 1
            res["by"] = chunk.system_fingerprint or res["by"]
            for c in chunk.choices:
                res["text"] += c.delta.content or ""
    except openai.APIError as e:
        res["error"] = {"type": type(e).__name__, "message": e.message, "code": getattr(e, "code", None)}
    return res


def many(n, fn):
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fn, range(n)))


# A 500 from the primary: the secondary answers, JSON and streamed.
out["failover"] = answer("fo", tag("failover json"), "status=500;mock=primary")
out["failover_stream"] = stream("fo", tag("failover stream"), "status=500;mock=primary")
mark("failover")

# A 429 with Retry-After: 1 on every 2nd request: the second request waits, then succeeds.
out["retry_after"] = [answer("ra", tag("retry-after"), "status=429;retry_after=1;every=2;mock=primary") for _ in range(2)]
mark("retry_after")

# A slow primary: 112 answers at 40 ms (over its p99_latency of 20 ms) open its circuit;
# traffic moves to the secondary; after open_for (1.5 s) probes find it fast and close it.
slow = "latency=40ms;mock=primary"
out["slow_load"] = many(112, lambda i: by("slow", tag("slow load"), slow))
out["slow_moved"] = by("slow", tag("slow moved"), slow)
time.sleep(1.7)
out["slow_recovered"] = [by("slow", tag("slow recovered")) for _ in range(4)]
mark("slow")

# A stream cut before its first content fails over invisibly; after it, the SDK raises.
out["cut_early"] = stream("cut", tag("cut early") + " one two three", "cut_after=0;mock=primary")
out["cut_late"] = stream("cut", tag("cut late") + " one two three four five", "cut_after=2;mock=primary")
mark("cut")

# Cheapest at or above the quality floor.
out["cheap"] = by("cheap", tag("cheap"))
out["good"] = by("good", tag("good"))
mark("cheapest")

# Weighted 1:3.
out["weighted"] = many(200, lambda i: by("w", tag("weighted")))
mark("weighted")

# A prompt above the short route's max_prompt_tokens takes the long-context route.
out["ctx_short"] = answer("ctx", tag("ctx short"))
out["ctx_long"] = answer("ctx", tag("ctx long") + " word" * 400)
mark("long_context")

# Every target down: 503 all_targets_unavailable with Retry-After.
out["all_down"] = answer("dn", tag("all down"), "status=503;retry_after=2")
mark("all_down")

# Per-character pricing (0.2 in, 2.0 out per million characters, 4 characters a token)
# against per-token (1.0, 1.0): 10,000 prompt characters and 16 answer tokens cost 2,131
# against 2,527 (millionths); a short prompt with 1,000 answer tokens 8,004 against 1,011.
out["bychar_long_prompt"] = by("bychar", tag("bychar long") + " word" * 2000, max_tokens=16)
out["bychar_long_answer"] = by("bychar", tag("bychar short"), max_tokens=1000)

# A long-context tier (0.5 per million tokens, 10.0 above 100 prompt tokens) against a flat
# 1.0: cheaper for a short prompt, dearer for a ~390-token one.
out["tiered_short"] = by("tiered", tag("tiered short"))
out["tiered_long"] = by("tiered", tag("tiered long") + " word" * 300)
mark("pricing")

out["seconds"] = {name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}
print(json.dumps(out))
