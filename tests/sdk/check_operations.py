"""The official OpenAI SDK's audio, moderation and image calls against a running modelgate.

Run by tests/sdk.rs with MODELGATE_URL, MODELGATE_KEY and MODELGATE_AUDIO_FILE set. The virtual
model `v` has a failing first target and a working second one behind it; tests/sdk.rs checks
afterwards what each upstream received. Prints one line per check and a closing
"N passed, N failed" line; exits 1 on any failure.
"""
import os
import sys
import traceback

import openai

URL = os.environ["MODELGATE_URL"]
KEY = os.environ.get("MODELGATE_KEY", "unused")
AUDIO = os.environ["MODELGATE_AUDIO_FILE"]
oa = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=30)


def transcription():
    with open(AUDIO, "rb") as f:
        r = oa.audio.transcriptions.create(model="v", file=f, language="en")
    assert r.text == "transcribed by b", r


def transcription_verbose_json():
    with open(AUDIO, "rb") as f:
        r = oa.audio.transcriptions.create(model="v", file=f, response_format="verbose_json")
    assert r.duration == 2.5, r
    assert r.text == "transcribed by b", r


def translation():
    with open(AUDIO, "rb") as f:
        r = oa.audio.translations.create(model="v", file=f)
    assert r.text == "translated by b", r


def speech_streamed():
    got = b""
    with oa.audio.speech.with_streaming_response.create(
            model="v", voice="alloy", input="Hello from the SDK") as r:
        assert r.headers.get("content-type") == "audio/mpeg", r.headers
        assert r.headers.get("x-modelgate-model") == "b/mb", r.headers
        for chunk in r.iter_bytes():
            got += chunk
    assert got == bytes(range(256)) * 40, len(got)


def moderation():
    r = oa.moderations.create(model="v", input=["I will attack", "hello"])
    assert r.results[0].flagged is True, r
    assert r.results[0].categories.violence is True, r
    assert r.results[1].flagged is False, r


def image_generation():
    r = oa.images.generate(model="v", prompt="a red fox", n=1)
    assert r.data[0].b64_json.startswith("iVBOR"), r


CHECKS = [transcription, transcription_verbose_json, translation, speech_streamed, moderation,
          image_generation]


def main():
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok   {check.__name__}")
            passed += 1
        except Exception:  # noqa: BLE001 - report every failure and go on
            print(f"FAIL {check.__name__}\n{traceback.format_exc()}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
