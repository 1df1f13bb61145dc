"""Official OpenAI and Anthropic SDKs against a running modelgate (mock upstreams behind it).

Run by tests/sdk.rs with MODELGATE_URL set. Virtual models expected:
  claude-smart -> an Anthropic-dialect upstream;  gpt-smart -> an OpenAI-dialect upstream;
  local -> the built-in mock provider.
Prints one line per check and a closing "N passed, N failed" line; exits 1 on any failure.
"""
import json
import os
import sys
import traceback

import anthropic
import openai

URL = os.environ["MODELGATE_URL"]
KEY = os.environ.get("MODELGATE_KEY", "unused")
oa = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=30)
an = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, timeout=30)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def openai_chat_anthropic_target():
    r = oa.chat.completions.create(model="claude-smart", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == "Hi from Claude", r
    assert r.choices[0].finish_reason == "stop", r
    assert r.usage.prompt_tokens > 0


def openai_stream_anthropic_target():
    text = ""
    finish = None
    with oa.chat.completions.create(model="claude-smart", stream=True,
                                    messages=[{"role": "user", "content": "hello"}]) as s:
        for chunk in s:
            # The common idiom: a client that did not ask for usage gets no usage-only chunk.
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == "Hello world", text
    assert finish == "stop", finish
    # Asked for, the usage comes last, in a chunk with no choices, as OpenAI sends it.
    chunks = list(oa.chat.completions.create(model="claude-smart", stream=True,
                                             stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": "hello"}]))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 10, chunks[-1]
    assert chunks[-1].usage.completion_tokens == 2, chunks[-1]
    assert all(c.choices for c in chunks[:-1])


def openai_tools_anthropic_target():
    r = oa.chat.completions.create(model="claude-smart", tools=TOOLS, tool_choice="auto",
                                   messages=[{"role": "user", "content": "weather in Paris?"}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", call
    assert json.loads(call.function.arguments) == {"city": "Paris"}, call
    assert r.choices[0].finish_reason == "tool_calls"
    # The tool result goes back through the gateway as an Anthropic tool_result.
    r2 = oa.chat.completions.create(model="claude-smart", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert r2.choices[0].message.content == "Hi from Claude"


def openai_tool_stream_anthropic_target():
    args = ""
    name = None
    with oa.chat.completions.create(model="claude-smart", stream=True, tools=TOOLS,
                                    messages=[{"role": "user", "content": "weather in Paris?"}]) as s:
        for chunk in s:
            for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}, (name, args)


def openai_stream_openai_target_every_chunk_has_choices():
    n = 0
    with oa.chat.completions.create(model="gpt-smart", stream=True,
                                    messages=[{"role": "user", "content": "hello"}]) as s:
        for chunk in s:
            assert chunk.choices, "a client that did not ask for usage gets no usage-only chunk"
            n += 1
    assert n >= 2


def anthropic_messages_openai_target():
    m = an.messages.create(model="gpt-smart", max_tokens=100, system="terse",
                           messages=[{"role": "user", "content": "hello"}])
    assert m.content[0].text == "Hello from GPT", m
    assert m.stop_reason == "end_turn", m
    assert m.usage.output_tokens > 0


def anthropic_stream_openai_target():
    with an.messages.stream(model="gpt-smart", max_tokens=100,
                            messages=[{"role": "user", "content": "hello"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from GPT", text
    assert final.stop_reason == "end_turn", final


def anthropic_errors_are_typed():
    try:
        an.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as e:
        assert e.status_code == 404
    else:
        raise AssertionError("expected NotFoundError")


def openai_errors_are_typed():
    try:
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.code == "model_not_found", e
    else:
        raise AssertionError("expected NotFoundError")


def openai_models_list():
    ids = [m.id for m in oa.models.list()]
    assert "claude-smart" in ids and "gpt-smart" in ids, ids


def openai_models_retrieve():
    m = oa.models.retrieve("gpt-smart")
    assert m.id == "gpt-smart" and m.object == "model", m
    try:
        oa.models.retrieve("no-such-model")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.code == "model_not_found", e
    else:
        raise AssertionError("expected NotFoundError")


def mock_streams_parse_in_every_api():
    said = "Hello from the modelgate mock provider. You said: "
    text = "".join(c.choices[0].text for c in oa.completions.create(model="local", prompt="p1", stream=True))
    assert text == said + "p1", text
    events = list(oa.responses.create(model="local", input="p2", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed", events
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == said + "p2" and events[-1].response.output_text == deltas, events[-1]
    with oa.responses.stream(model="local", input="p3") as s:
        assert s.get_final_response().output_text == said + "p3"
    with an.messages.stream(model="local", max_tokens=50, messages=[{"role": "user", "content": "p4"}]) as s:
        assert "".join(s.text_stream) == said + "p4"


def anthropic_count_tokens():
    msgs = [{"role": "user", "content": "count me"}]
    assert an.messages.count_tokens(model="claude-smart", messages=msgs).input_tokens == 17
    assert an.messages.count_tokens(model="local", messages=msgs).input_tokens > 0
    try:
        an.messages.count_tokens(model="gpt-smart", messages=msgs)
    except anthropic.BadRequestError as e:
        assert e.status_code == 400 and e.body["error"]["type"] == "invalid_request_error", e
    else:
        raise AssertionError("expected BadRequestError")


CHECKS = [openai_chat_anthropic_target, openai_stream_anthropic_target, openai_tools_anthropic_target,
          openai_tool_stream_anthropic_target, openai_stream_openai_target_every_chunk_has_choices,
          anthropic_messages_openai_target, anthropic_stream_openai_target, anthropic_errors_are_typed,
          openai_errors_are_typed, openai_models_list, openai_models_retrieve,
          mock_streams_parse_in_every_api, anthropic_count_tokens]

passed = failed = 0
for check in CHECKS:
    try:
        check()
        passed += 1
        print(f"ok   {check.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {check.__name__}")
        traceback.print_exc()
print(f"sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
