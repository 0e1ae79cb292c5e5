"""The official openai SDK through HTTPS_PROXY: non-streaming and streaming chat.

Environment: HTTPS_PROXY and SSL_CERT_FILE point at the proxy; OPENAI_BASE_URL at the
provider's real (allowlisted) base URL. Prints one JSON line of results for the Rust test.
"""
import json
import os

import openai

client = openai.OpenAI(api_key="sk-test-python", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
out = {}
r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from python"}])
out["content"] = r.choices[0].message.content
out["usage_total"] = r.usage.total_tokens if r.usage else None

parts = []
for chunk in client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "stream from python please"}], stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
out["stream"] = "".join(parts)
out["chunks"] = len(parts)

blocked = openai.OpenAI(api_key="sk-test-python", base_url=os.environ["BLOCKED_BASE_URL"], max_retries=0)
try:
    blocked.models.list()
    out["blocked"] = "no error"
except openai.PermissionDeniedError as e:
    out["blocked"] = e.code
    out["blocked_status"] = e.status_code
print(json.dumps(out))
