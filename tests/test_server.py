"""`prosparse serve` as a real process on loopback, through the official openai
client and raw HTTP: answers (greedy, the same text streamed or not, equal to
the in-process Model), a bounded load test, a client hanging up mid-stream,
bad input answered with 4xx JSON, prefix reuse, the API key, SIGTERM."""
from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.server import ServerProcess

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.real

QUESTIONS = ["Say hi", "What is 2+2?", "Name a colour.", "Who wrote Hamlet?"]


@pytest.fixture(scope="module")
def server(smollm2_path):
    with ServerProcess(smollm2_path, "--parallel", "2", "--ctx", "1024") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(smollm2_path):
    """Greedy answers of the in-process Model, fresh KV cache each time."""
    from prosparse_cpu import Model

    out = {}
    with Model(smollm2_path, threads=1, n_ctx=1024) as m:
        for q in QUESTIONS:
            m.reset()
            out[q] = m.chat([{"role": "user", "content": q}], temperature=0.0, max_tokens=12)
        m.reset()
        out["completion"] = "".join(m.generate("Once upon a time", max_tokens=10, temperature=0.0))
    return out


def chat(client, q: str, **kw):
    return client.chat.completions.create(model="x", messages=[{"role": "user", "content": q}],
                                          temperature=0, max_tokens=12, **kw)


# ---- the openai client ---------------------------------------------------------------
def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["SmolLM2-135M-Instruct.Q4_1"]


def test_chat_plain_and_streamed_agree(client, reference):
    plain = chat(client, QUESTIONS[0])
    assert plain.choices[0].message.content == reference[QUESTIONS[0]]
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 12
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + 12

    chunks = list(chat(client, QUESTIONS[0], stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_finish_reason_stop(client):
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Say hi"}],
                                       temperature=0, max_tokens=200)
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 200
    first = r.choices[0].message.content.split()[0]
    r = chat(client, "Say hi", stop=[first[1:]])  # a stop string inside the first word: cut there
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == first[:1]


def test_completions(client, reference):
    r = client.completions.create(model="x", prompt="Once upon a time", max_tokens=10, temperature=0)
    assert r.choices[0].text == reference["completion"]
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 10
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="x", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True) if c.choices)
    assert streamed == reference["completion"]


def test_prefix_reuse(client):
    """A chat's second turn reuses the first turn's KV cache (OpenAI's cached_tokens)."""
    msgs = [{"role": "system", "content": "You are terse. Session %d." % time.monotonic_ns()},
            {"role": "user", "content": "Name a fruit."}]
    first = client.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=8)
    assert first.usage.prompt_tokens_details.cached_tokens < 10  # the system line is new: only its role tag is cached
    msgs += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "Another one."}]
    second = client.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=8)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens


# ---- load and hang-ups ---------------------------------------------------------------
def test_load_32_requests_8_clients(server, reference):
    clients = [openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
               for _ in range(8)]

    def worker(i: int) -> list[tuple[str, str]]:
        got = []
        for j in range(4):
            q = QUESTIONS[(i + j) % len(QUESTIONS)]
            if j % 2:
                stream = chat(clients[i], q, stream=True)
                got.append((q, "".join(c.choices[0].delta.content or "" for c in stream if c.choices)))
            else:
                got.append((q, chat(clients[i], q).choices[0].message.content))
        return got

    with ThreadPoolExecutor(8) as ex:
        answers = [a for batch in ex.map(worker, range(8)) for a in batch]
    assert len(answers) == 32
    assert [a for q, a in answers if a != reference[q]] == []
    status, health = server.json("GET", "/health")
    assert status == 200 and health["idle"] == health["sessions"] == 2 and health["waiting"] == 0


def test_client_hangs_up_mid_stream(server, client, reference):
    conn = server.connection()
    conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                 body=json.dumps({"messages": [{"role": "user", "content": "Write a very long story."}],
                                  "max_tokens": 950, "stream": True, "temperature": 0.8}).encode())
    r = conn.getresponse()
    assert r.status == 200
    events = 0
    while events < 3:
        if r.fp.readline().startswith(b"data: "):
            events += 1
    busy = server.json("GET", "/health")[1]
    assert busy["idle"] == 1
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 1.5  # 950 tokens would take about 5 s at one thread
    while server.json("GET", "/health")[1]["idle"] != 2:
        assert time.monotonic() < deadline, "the session was not freed after the client left"
        time.sleep(0.05)
    assert chat(client, QUESTIONS[1]).choices[0].message.content == reference[QUESTIONS[1]]


# ---- bad input ------------------------------------------------------------------------
LONG = "hello " * 1100
BAD = [
    ("POST", "/v1/chat/completions", b'{"messages": [', 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", b'[1, 2]', 400, "JSON object"),
    ("POST", "/v1/chat/completions", b'{"model": "x"}', 400, "messages: missing field"),
    ("POST", "/v1/chat/completions", b'{"messages": "hi"}', 400, "messages"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user"}], "max_tokens": "5"}', 400, "max_tokens"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "wizard", "content": "x"}]}', 400, "role"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', 400, "content"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
     400, "temperature"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
     400, "stream"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -4}',
     400, "at least 1"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999}',
     400, "more than the context"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 3}', 400, "n:"),
    ("POST", "/v1/chat/completions",
     json.dumps({"messages": [{"role": "user", "content": LONG}]}).encode(), 400, "too many for the context"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 1}',
     400, "not supported"),
    ("POST", "/v1/completions", b'{"max_tokens": 3}', 400, "prompt: missing field"),
    ("POST", "/v1/completions", b'{"prompt": [1, 99999999]}', 400, "outside the vocabulary"),
    ("POST", "/v1/completions", json.dumps({"prompt": LONG}).encode(), 400, "too many for the context"),
    ("POST", "/v1/completions", b'{"prompt": "' + b"a" * (2 << 20) + b'"}', 413, "limit"),
    ("GET", "/v1/chat/completions", None, 405, ""),
    ("GET", "/v1/nothing-here", None, 404, ""),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_json_error(server, method, path, body, status, words):
    got, headers, data = server.request(method, path, body)
    assert got == status, data
    assert headers["content-type"].startswith("application/json")
    err = json.loads(data)["error"]
    assert set(err) >= {"message", "type", "code"} and words in err["message"]
    assert "Traceback" not in err["message"]
    assert server.json("GET", "/health")[0] == 200


def test_over_long_prompt_says_by_how_much(server):
    status, body = server.json("POST", "/v1/completions", {"prompt": [1] * 1030})
    assert status == 400
    assert "1030 tokens, 7 too many for the context of 1024" in body["error"]["message"]
    assert body["error"]["code"] == "context_length_exceeded"


def test_null_fields_mean_the_default(server):
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3, "temperature": None,
            "top_p": None, "stop": None, "seed": None, "n": None, "logprobs": None, "stream": None,
            "stream_options": None, "presence_penalty": None, "tools": None}
    status, out = server.json("POST", "/v1/chat/completions", body)
    assert status == 200, out
    assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["message"]["role"] == "assistant"


def test_chat_page(server):
    status, headers, data = server.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/v1/chat/completions" in data and b"reset" in data.lower()


# ---- API key and SIGTERM (a server of their own) --------------------------------------
def test_api_key_and_sigterm(smollm2_path):
    srv = ServerProcess(smollm2_path, "--api-key", "sesame", "--ctx", "512").start()
    try:
        assert srv.json("GET", "/health")[0] == 200  # liveness needs no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            status, body = srv.json("GET", "/v1/models", headers=headers)
            assert status == 401 and body["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key="sesame", max_retries=0, timeout=60)
        assert chat(good, "Say hi").usage.completion_tokens == 12

        # SIGTERM while a stream is running: the stream ends with an error event, the process within seconds
        stream = good.chat.completions.create(model="x", messages=[{"role": "user", "content": "A long story."}],
                                              max_tokens=400, stream=True)
        next(iter(stream))
        took = srv.stop()
        # uvicorn shuts down cleanly, then re-raises the signal: the exit status says SIGTERM
        assert srv.proc.returncode in (0, -signal.SIGTERM) and took < 5, srv.output()
        assert "Application shutdown complete" in srv.output()
    finally:
        srv.kill()


def test_serve_cli_errors(tmp_path):
    from prosparse_cpu.cli import main

    assert main(["serve", str(tmp_path / "missing.gguf")]) == 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    assert main(["serve", str(bad), "--port", "0"]) == 1
