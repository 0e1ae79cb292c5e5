"""OpenAI-format awareness through the proxy, with the official SDK.

Runs each scenario, recording what the SDK returned or raised, and prints one JSON object.
"""
import json
import os

import openai

client = openai.OpenAI(api_key="sk-test-features", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}]
out = {}


def chat(content, **kw):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}], **kw)


def stream_result(content, **kw):
    """Collects a stream: text, tool calls, usage chunks; or the error raised."""
    res = {"text": "", "tool_args": {}, "tool_names": {}, "usage_chunks": 0, "error": None}
    try:
        for chunk in chat(content, stream=True, **kw):
            if chunk.usage is not None:
                res["usage_chunks"] += 1
            for c in chunk.choices:
                if c.delta.content:
                    res["text"] += c.delta.content
                for tc in c.delta.tool_calls or []:
                    i = str(tc.index)
                    if tc.function and tc.function.name:
                        res["tool_names"][i] = tc.function.name
                    if tc.function and tc.function.arguments:
                        res["tool_args"][i] = res["tool_args"].get(i, "") + tc.function.arguments
    except Exception as e:  # the SDK raises on an in-stream error event
        res["error"] = f"{type(e).__name__}: {e}"
    return res


out["stream_text"] = stream_result("tell me about streams")
out["usage_not_asked"] = stream_result("no usage please")
out["usage_asked"] = stream_result("usage please", stream_options={"include_usage": True})
out["tool_valid"] = stream_result('call get_weather {"city": "Paris", "days": 2}', tools=TOOLS)
out["tool_unknown"] = stream_result('call delete_everything {"city": "Paris"}', tools=TOOLS)
out["tool_missing"] = stream_result('call get_weather {"days": 2}', tools=TOOLS)
out["tool_wrong_type"] = stream_result('call get_weather {"city": "Paris", "days": "two"}', tools=TOOLS)

try:
    r = chat('call get_weather {"city": "Oslo"}', tools=TOOLS)
    out["tool_json_valid"] = r.choices[0].message.tool_calls[0].function.arguments
except Exception as e:
    out["tool_json_valid"] = f"error {e!r}"
try:
    chat('call get_weather {"days": 1}', tools=TOOLS)
    out["tool_json_invalid"] = "no error"
except openai.APIStatusError as e:
    out["tool_json_invalid"] = {"status": e.status_code, "code": e.code}

try:
    chat("overloaded?", extra_headers={"x-mock-fault": "status=529;body=anthropic"})
    out["anthropic_529"] = "no error"
except openai.APIStatusError as e:
    out["anthropic_529"] = {"status": e.status_code, "code": e.code, "type": e.type, "message": e.message}

out["cut"] = stream_result("one two three four five six", extra_headers={"x-mock-fault": "cut_after=2"})
out["ended_early"] = stream_result("one two three four five six", extra_headers={"x-mock-fault": "end_early_after=2"})

try:
    chat("x", extra_body={"messages": "not-a-list"})
    out["bad_json_passthrough"] = "ok"
except openai.APIStatusError as e:
    out["bad_json_passthrough"] = {"status": e.status_code}

r = chat("gzip me please", extra_headers={"x-mock-fault": "gzip"})
out["gzip"] = r.choices[0].message.content
print(json.dumps(out))
