"""Prompt protection with the official SDK: one JSON and one streamed answer for PROMPT."""
import json
import os

import openai

client = openai.OpenAI(api_key="sk-test-protect", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
prompt = os.environ["PROMPT"]
out = {}
r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
out["json"] = r.choices[0].message.content
text = ""
for chunk in client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
):
    for c in chunk.choices:
        text += c.delta.content or ""
out["stream"] = text
print(json.dumps(out))
