"""The official NeMo Platform SDK (nemo-platform) against a running modelgate.

Run by tests/sdk.rs with MODELGATE_URL and MODELGATE_KEY set. Expects a provider `oa` serving
`gpt-x` (OpenAI dialect) and a provider `claude` serving `claude-x` (Anthropic dialect).
Prints one line per check and a closing "N passed, N failed" line; exits 1 on any failure.
"""
import os
import sys
import traceback

import anthropic
import openai
from nemo_platform import NeMoPlatform, ConflictError, NotFoundError

URL = os.environ["MODELGATE_URL"]
KEY = os.environ.get("MODELGATE_KEY", "unused")
nemo = NeMoPlatform(base_url=URL, workspace="sdk", max_retries=0, timeout=30,
                    default_headers={"Authorization": f"Bearer {KEY}"})
vms = nemo.inference.virtual_models


def create_and_retrieve():
    vm = vms.create(name="chat", default_model_entity="oa/gpt-x",
                    models=[{"model": "claude/claude-x", "backend_format": "ANTHROPIC_MESSAGES"}],
                    request_middleware=[{"name": "system-prompt", "config_type": "system_prompt_config",
                                        "config": {"text": "Be brief."}}])
    assert vm.workspace == "sdk" and vm.name == "chat", vm
    assert vm.id == vm.entity_id and vm.parent == "sdk", vm
    assert vm.default_model_entity == "oa/gpt-x", vm
    assert [m.model for m in vm.models] == ["oa/gpt-x", "claude/claude-x"], vm
    assert vm.models[1].backend_format == "ANTHROPIC_MESSAGES", vm
    assert vm.request_middleware[0].name == "system-prompt", vm
    got = vms.retrieve("chat")
    assert got.id == vm.id and got.created_at == vm.created_at, got
    try:
        vms.create(name="chat", default_model_entity="oa/gpt-x")
        raise AssertionError("a second create of the same name must be 409")
    except ConflictError:
        pass
    again = vms.create(name="chat", default_model_entity="oa/gpt-x", exist_ok=True)
    assert again.id == vm.id


def list_pages():
    for n in ["p1", "p2", "p3"]:
        vms.create(name=n, default_model_entity="oa/gpt-x")
    page = vms.list(page_size=2, sort="name")
    assert page.pagination.page_size == 2 and page.pagination.total_results == 4, page.pagination
    names = [vm.name for vm in page]  # iterating follows the pages
    assert names == ["chat", "p1", "p2", "p3"], names
    every = [f"{vm.workspace}/{vm.name}" for vm in vms.list(workspace="-", page_size=200)]
    assert "oa/gpt-x" in every and "sdk/p1" in every, every
    mine = [vm.name for vm in vms.list(workspace="-", exclude_autoprovisioned=True, page_size=200)]
    assert "gpt-x" not in mine, mine


def patch_and_delete():
    vm = vms.patch("p1", models=[{"model": "claude/claude-x"}], response_middleware=[])
    assert [m.model for m in vm.models] == ["oa/gpt-x", "claude/claude-x"], vm
    assert vm.response_middleware == [], vm
    vms.delete("p1")
    try:
        vms.retrieve("p1")
        raise AssertionError("a deleted virtual model must be 404")
    except NotFoundError:
        pass
    try:
        vms.patch("gpt-x", workspace="oa", models=[])
        raise AssertionError("a passthrough must be read-only")
    except ConflictError:
        pass


def openai_client_on_the_nemo_base_url():
    base = nemo.models.get_openai_route_base_url()
    assert base.endswith("/apis/inference-gateway/v2/workspaces/sdk/openai/-/v1"), base
    oa = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=30)
    r = oa.chat.completions.create(model="sdk/chat", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == "Hello from GPT", r
    text = ""
    with oa.chat.completions.create(model="sdk/chat", stream=True,
                                    messages=[{"role": "user", "content": "hello"}]) as s:
        for chunk in s:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "Hello from GPT", text
    ids = [m.id for m in oa.models.list()]
    assert "sdk/chat" in ids, ids


def anthropic_client_on_a_nemo_virtual_model():
    # The virtual model made through the NeMo API answers the Anthropic SDK too (its default
    # target speaks OpenAI: the gateway translates both ways).
    an = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, timeout=30)
    r = an.messages.create(model="sdk/chat", max_tokens=32,
                           messages=[{"role": "user", "content": "hello"}])
    assert r.content[0].text == "Hello from GPT", r
    with an.messages.stream(model="sdk/chat", max_tokens=32,
                            messages=[{"role": "user", "content": "hello"}]) as s:
        text = "".join(s.text_stream)
    assert text == "Hello from GPT", text


CHECKS = [create_and_retrieve, list_pages, patch_and_delete, openai_client_on_the_nemo_base_url,
          anthropic_client_on_a_nemo_virtual_model]

if __name__ == "__main__":
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
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
