#!/usr/bin/env python3
"""A scripted stand-in for the model APIs of Claude Code, Codex, Gemini CLI,
GitHub Copilot CLI, OpenCode, Pi, Qwen Code, Kimi Code, OpenClaw and Aider.

The real CLIs are pointed at this server on 127.0.0.1 (see cli_offline.py),
so they run fully offline: every "model" answer comes from here, chosen by
directives written in the user's text. Standard library only.

    python3 model_endpoint.py [--port 0] [--dump-dir DIR]

The first line on stdout is exactly `listening <port>` (flushed); all other
output goes to stderr.

APIs spoken, enough for each CLI to finish its turns (streaming or not):
  Anthropic  HEAD / , GET / , POST /v1/messages[?beta=true],
             POST /v1/messages/count_tokens
  OpenAI     POST /v1/responses (the Responses API, as SSE), GET /v1/models
             (an empty list for Codex; local-model and gpt-4o for others)
             POST /v1/chat/completions (the Chat Completions API, streaming
             as SSE `data: {chunk}` ... `data: [DONE]`, or not), spoken by
             Copilot CLI, OpenCode, Pi, Qwen Code, Kimi Code, OpenClaw
             and Aider
  Gemini     POST /v1beta/models/<model>:generateContent,
             :streamGenerateContent?alt=sse, :countTokens

Directives, found anywhere in the newest user message of a request:
  (none)                    reply with the text `ok <n>`
  SLOW=<seconds>            stream the reply slowly over that many seconds
  WAIT=<seconds>            say nothing for that long before the reply
                            starts (the stream is open: the CLI "thinks")
  TOOL=<tool> ARGS=<json>   call the tool <tool> of the MCP server "agentbus"
                            with those arguments (JSON on one line); when the
                            tool's result comes back, reply with `done`
  FAIL=<status>             answer with that HTTP error status (a JSON error
                            body shaped like the vendor's)

The last occurrence of each directive counts. The tool's name is taken
from the request: Claude offers mcp__agentbus__<tool>, Gemini
mcp_agentbus_<tool>, Codex a function <tool> inside the namespace tool
mcp__agentbus, Copilot agentbus-<tool>, OpenCode agentbus_<tool> (a Chat
Completions request gets a `tool_calls` reply naming the tool as the
request's tools list does). Claude Code and Codex may hold MCP tools back
("deferred") and offer a search tool instead (Claude's ToolSearch, Codex's
client-side tool_search); then the endpoint first calls that search for
the tool, then the tool itself. The search round trip is not recorded as a
turn.

Side requests that the CLIs make on their own (Claude's, Codex's and
OpenCode's title requests, Gemini's model-routing check, ...) are answered
with something valid (a JSON value fitting the schema they ask for) and are
not recorded. A Chat Completions request is a side request when it asks for
JSON output or offers no tools (the CLIs' real turns always offer some;
Aider's, which never do, are always turns).
Real turns are, with numbers n shared by all kinds and clients:

  {"n": 3, "cli": "claude"|"codex"|"gemini"|"copilot"|"opencode"|"pi"|"aider"|"chat",
   "kind": "turn", "text": <the newest typed user text>,
   "at_ms": <when received>}
  {"n": 4, ..., "kind": "tool_result", "text": <the tool's output, as the
   CLI passes it on>, ...}
  extra keys: "failed": <status> on a turn answered by FAIL=; "retry": <k>
  when Claude (or Pi, through the OpenAI SDK) marks the request as its k-th
  retry (Copilot's and OpenCode's own retries are not marked); "is_error" on Claude's tool results. The CLIs retry failed
  requests, and each retry is recorded.

The Chat Completions clients are told apart by their headers (OpenCode's
User-Agent; Copilot's X-Initiator) or else their system prompt; "chat" is
any other client (Qwen Code, Kimi Code, OpenClaw). Copilot puts <current_datetime>...</current_datetime>
before the typed text: such leading tagged blocks are not part of "text".
A message typed while a tool runs may reach the model in the request that
carries the tool's result, after it (Pi's steering, OpenCode's queue): then
a tool_result record, then the turn.

  GET  /turns[?since=N]  the recorded turns with n > N, oldest first
  GET  /requests         every request seen (method, path, time, a summary)
  POST /reset            forget turns and requests (n keeps counting)

Unknown paths get 404 with a JSON body. A request that breaks the handler
gets a 500 and a traceback on stderr; the server keeps running.
"""

import argparse
import itertools
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# The MCP server whose tools TOOL= calls.
MCP_SERVER = "agentbus"


def log(*parts):
    print("model_endpoint:", *parts, file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def new_id(prefix):
    return prefix + uuid.uuid4().hex[:24]


class State:
    """Everything the server remembers, behind one lock."""

    def __init__(self, dump_dir=None):
        self.lock = threading.Lock()
        self.turns = []
        self.requests = []
        self.seq = 0  # numbers turns and tool results together
        self.req_seq = 0
        self.dump_dir = dump_dir

    def record_turn(self, entry):
        with self.lock:
            self.seq += 1
            entry["n"] = self.seq
            self.turns.append(entry)
            return self.seq

    def record_request(self, entry):
        with self.lock:
            self.req_seq += 1
            entry["i"] = self.req_seq
            self.requests.append(entry)
            return self.req_seq

    def reset(self):
        with self.lock:
            self.turns.clear()
            self.requests.clear()


STATE = State()


# ---------------------------------------------------------------- directives


def parse_directives(text):
    """Reads SLOW=, WAIT=, TOOL= (with ARGS=) and FAIL= out of a user's text."""
    d = {}
    if not text:
        return d

    def last(pattern):  # the last occurrence wins
        found = list(re.finditer(pattern, text))
        return found[-1] if found else None

    m = last(r"\bSLOW=(\d+(?:\.\d+)?)")
    if m:
        d["slow"] = min(float(m.group(1)), 600.0)
    m = last(r"\bWAIT=(\d+(?:\.\d+)?)")
    if m:
        d["wait"] = min(float(m.group(1)), 600.0)
    m = last(r"\bFAIL=(\d{3})\b")
    if m:
        d["fail"] = int(m.group(1))
    m = last(r"\bTOOL=([A-Za-z0-9_.\-]+)")
    if m:
        d["tool"] = m.group(1)
        d["args"] = {}
        a = re.compile(r"\bARGS=").search(text, m.end())
        if a:
            start = text.find("{", a.end())
            if start != -1:
                try:
                    value, _ = json.JSONDecoder().raw_decode(text[start:])
                    if isinstance(value, dict):
                        d["args"] = value
                except ValueError:
                    log("ARGS= is not valid JSON:", text[start : start + 120])
    return d


def pick_tool_name(wanted, names):
    """The name under which the request offers the agentbus tool `wanted`.

    Each CLI spells MCP tool names its own way (Claude mcp__agentbus__x,
    Gemini mcp_agentbus_x, ...), so look at what the request carries."""
    names = [n for n in names if isinstance(n, str)]
    for pref in (
        f"mcp__{MCP_SERVER}__{wanted}",
        f"mcp_{MCP_SERVER}_{wanted}",
        f"{MCP_SERVER}__{wanted}",
        f"{MCP_SERVER}_{wanted}",
        f"{MCP_SERVER}.{wanted}",
    ):
        if pref in names:
            return pref
    for n in names:
        if MCP_SERVER in n and n.endswith(wanted):
            return n
    if wanted in names:
        return wanted
    for n in names:
        if n.endswith(wanted):
            return n
    return None


# ------------------------------------------------------------- JSON schemas


def fill_schema(schema, key=None, depth=0):
    """A small value that satisfies a JSON schema, for structured side
    requests (a title, a routing choice, a next-speaker check...)."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        choices = schema["enum"]
        # "user" ends Gemini's next-speaker check (the model does not go on).
        return "user" if "user" in choices else choices[0]
    for k in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(k), list) and schema[k]:
            return fill_schema(schema[k][0], key, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if isinstance(t, str):
        t = t.lower()  # Gemini's schemas spell types in capitals
    if t == "object" or (t is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {k: fill_schema(v, k, depth + 1) for k, v in props.items()}
    if t == "array":
        n = int(schema.get("minItems") or 0)
        return [fill_schema(schema.get("items") or {}, key, depth + 1) for _ in range(n)]
    if t == "string":
        return "Offline chat" if key and "title" in key.lower() else "ok"
    if t in ("integer", "number"):
        return schema.get("minimum", 0)
    if t == "boolean":
        return False
    if t == "null":
        return None
    return "ok"


# ------------------------------------------------------------ HTTP handling


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentbus-model-endpoint/1"

    # -- plumbing

    def log_message(self, fmt, *args):
        log(self.address_string(), fmt % args)

    def read_body(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        raw = self.rfile.read(n) if n > 0 else b""
        if not raw and self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self.read_chunked()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {"_unparsed": raw[:200].decode("utf-8", "replace")}

    def read_chunked(self):
        out = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def send_json(self, status, obj, head_only=False):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
            self.wfile.flush()

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def sse(self, data, event=None):
        """Writes one server-sent event as one HTTP chunk."""
        text = ""
        if event:
            text += f"event: {event}\n"
        text += f"data: {json.dumps(data)}\n\n"
        raw = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        self.wfile.flush()

    def sse_raw(self, data):
        """An event whose data is not JSON (the Chat Completions API's
        closing `data: [DONE]`)."""
        raw = f"data: {data}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        self.wfile.flush()

    def end_sse(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- dispatch

    def do_HEAD(self):
        self.route("HEAD")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        self.at_ms = now_ms()
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = {}
        self.req = {"method": method, "path": self.path, "at_ms": self.at_ms}
        try:
            if method in ("POST", "PUT"):
                body = self.read_body()
            if not isinstance(body, dict):
                body = {"_not_an_object": body}
            self.dispatch(method, path, query, body)
        except (BrokenPipeError, ConnectionResetError):
            log("client went away during", method, self.path)
        except Exception:  # never let one bad request take the server down
            log("error handling", method, self.path, "\n" + traceback.format_exc())
            self.close_connection = True
            try:
                self.send_json(500, {"error": {"type": "api_error", "message": "endpoint bug"}})
            except Exception:
                pass
        finally:
            if path not in ("/turns", "/requests"):
                i = STATE.record_request(self.req)
                if STATE.dump_dir:
                    self.dump(i, method, path, body)

    def dump(self, i, method, path, body):
        try:
            name = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")[:60] or "root"
            with open(f"{STATE.dump_dir}/{os.getpid()}-{i:04d}-{method}-{name}.json", "w") as f:
                json.dump({"path": self.path, "headers": dict(self.headers), "body": body}, f, indent=1)
        except OSError as e:
            log("cannot dump:", e)

    def dispatch(self, method, path, query, body):
        if path == "/" and method in ("HEAD", "GET"):
            return self.send_json(200, {"ok": True}, head_only=method == "HEAD")
        if method == "GET" and path == "/turns":
            raw = (query.get("since") or ["0"])[0] or "0"
            if not raw.lstrip("-").isdigit():
                return self.send_json(400, {"error": "since must be a whole number"})
            since = int(raw)
            with STATE.lock:
                items = [t for t in STATE.turns if t["n"] > since]
            return self.send_json(200, items)
        if method == "GET" and path == "/requests":
            with STATE.lock:
                items = list(STATE.requests)
            return self.send_json(200, items)
        if method == "POST" and path == "/reset":
            STATE.reset()
            return self.send_json(200, {"ok": True})
        # Anthropic
        if method == "POST" and path == "/v1/messages":
            return self.anthropic_messages(body)
        if method == "POST" and path == "/v1/messages/count_tokens":
            self.req["summary"] = {"cli": "claude", "kind": "count_tokens"}
            return self.send_json(200, {"input_tokens": approx_tokens(body)})
        # OpenAI (Codex)
        if method == "POST" and path == "/v1/responses":
            return self.openai_responses(body)
        if method == "GET" and path == "/v1/models":
            cli = chat_cli(self.headers)
            if cli == "chat" or self.headers.get("originator") or "codex" in self.user_agent():
                # Codex (and any client we cannot name) get the list as before.
                self.req["summary"] = {"cli": "codex", "kind": "models"}
                return self.send_json(200, {"object": "list", "data": [], "models": []})
            self.req["summary"] = {"cli": cli, "kind": "models"}
            return self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "agentbus"}
                for m in CHAT_MODELS]})
        # OpenAI Chat Completions (Copilot CLI, OpenCode, Pi)
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            return self.chat_completions(body)
        # Gemini
        m = re.fullmatch(r"/v1(?:beta|alpha)?/models/([^/:]+):(\w+)", path)
        if m and method == "POST":
            return self.gemini(m.group(1), m.group(2), body)
        self.req["summary"] = {"kind": "unknown"}
        return self.send_json(404, {"error": {"code": 404, "message": f"no route {method} {path}"}})

    # ----------------------------------------------------------- Anthropic

    def anthropic_messages(self, body):
        model = body.get("model") or "claude"
        stream = bool(body.get("stream"))
        msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
        last_user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
        blocks = anthropic_blocks(last_user)
        tool_results = [b for b in blocks if b.get("type") == "tool_result"]
        text = anthropic_typed_text(blocks)
        schema = anthropic_schema(body)
        summary = {"cli": "claude", "model": model, "stream": stream, "tools": len(tools),
                   "messages": len(msgs)}
        self.req["summary"] = summary

        # Side requests: a structured-output request (the title), or one
        # that offers no tools at all while the real turns do.
        if schema is not None or (not tools and not tool_results):
            summary["kind"] = "side"
            summary["text"] = text[:80]
            out = json.dumps(fill_schema(schema)) if schema is not None else "ok"
            return self.anthropic_reply(model, stream, [("text", out)])

        if tool_results:
            # Which tool's results are these? Our own ToolSearch call (made
            # to load a deferred MCP tool, see below) is not a turn: now make
            # the call the user's text asked for.
            used = {b.get("id"): b.get("name") for m in msgs if m.get("role") == "assistant"
                    for b in anthropic_blocks(m) if b.get("type") == "tool_use"}
            if all(used.get(b.get("tool_use_id")) == "ToolSearch" for b in tool_results):
                # The newest user message that is not a tool result (those
                # may carry a text block too, like "Tool loaded.").
                typed = next((t for t in (anthropic_typed_text(anthropic_blocks(m))
                                          for m in reversed(msgs) if m.get("role") == "user"
                                          and not any(b.get("type") == "tool_result"
                                                      for b in anthropic_blocks(m))) if t), "")
                d = parse_directives(typed)
                name = pick_tool_name(d.get("tool", ""), tools + deferred_tool_names(body))
                summary.update(kind="tool_search_result", tool_call=name)
                if name:
                    return self.anthropic_reply(model, stream, [("tool_use", name, d["args"])])
                return self.anthropic_reply(model, stream, [("text", f"no tool {d.get('tool')} found")])
            rtext = "\n".join(tool_result_text(b.get("content")) for b in tool_results)
            n = STATE.record_turn({"cli": "claude", "kind": "tool_result", "text": rtext,
                                   "at_ms": self.at_ms,
                                   "is_error": any(bool(b.get("is_error")) for b in tool_results)})
            summary.update(kind="tool_result", n=n, text=rtext[:80])
            return self.anthropic_reply(model, stream, [("text", "done")])

        d = parse_directives(text)
        entry = {"cli": "claude", "kind": "turn", "text": text, "at_ms": self.at_ms}
        retry = self.headers.get("X-Stainless-Retry-Count", "0")
        if retry.isdigit() and retry != "0":
            entry["retry"] = int(retry)  # the CLI's own retry of an earlier request
        n = STATE.record_turn(entry)
        summary.update(kind="turn", n=n, text=text[:80], directives=d)
        if "fail" in d:
            return self.scripted_failure(n, d["fail"], {"type": "error", "error": {
                "type": "api_error", "message": f"scripted failure {d['fail']}"}})
        if "tool" in d:
            name = pick_tool_name(d["tool"], tools)
            if name:
                summary["tool_call"] = name
                return self.anthropic_reply(model, stream, [("tool_use", name, d["args"])],
                                            **pace(d))
            deferred = pick_tool_name(d["tool"], deferred_tool_names(body))
            if deferred and "ToolSearch" in tools:
                # Claude Code defers MCP tools: only their names are listed
                # (in the system prompt); ToolSearch loads a schema first.
                summary["tool_search"] = deferred
                return self.anthropic_reply(
                    model, stream, [("tool_use", "ToolSearch", {"query": f"select:{deferred}"})],
                    **pace(d))
            return self.anthropic_reply(model, stream, [("text", f"no tool {d['tool']} offered")])
        return self.anthropic_reply(model, stream, [("text", f"ok {n}")], **pace(d))

    def scripted_failure(self, n, status, body):
        """Answers FAIL=<status>; the turn's record says so, because the CLIs
        retry (each attempt is a request, and so a record, of its own)."""
        with STATE.lock:
            for t in STATE.turns:
                if t["n"] == n:
                    t["failed"] = status
        return self.send_json(status, body)

    def anthropic_reply(self, model, stream, parts, slow=0, wait=0):
        """parts: ("text", str) or ("tool_use", name, input_dict)."""
        msg_id = new_id("msg_")
        usage = {"input_tokens": 12, "output_tokens": 6,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        content = []
        for p in parts:
            if p[0] == "text":
                content.append({"type": "text", "text": p[1]})
            else:
                content.append({"type": "tool_use", "id": new_id("toolu_"), "name": p[1], "input": p[2]})
        stop = "tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn"
        if not stream:
            time.sleep(wait + slow)
            return self.send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage})
        self.start_sse()
        self.sse({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": dict(usage, output_tokens=1)}}, "message_start")
        self.sse({"type": "ping"}, "ping")
        time.sleep(wait)
        for i, c in enumerate(content):
            if c["type"] == "text":
                self.sse({"type": "content_block_start", "index": i,
                          "content_block": {"type": "text", "text": ""}}, "content_block_start")
                for piece in paced(slow_pieces(c["text"], slow), slow):
                    self.sse({"type": "content_block_delta", "index": i,
                              "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
            else:
                self.sse({"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": c["id"], "name": c["name"], "input": {}}},
                    "content_block_start")
                if slow:
                    time.sleep(slow)
                self.sse({"type": "content_block_delta", "index": i, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(c["input"])}},
                    "content_block_delta")
            self.sse({"type": "content_block_stop", "index": i}, "content_block_stop")
        self.sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                  "usage": {"output_tokens": 6}}, "message_delta")
        self.sse({"type": "message_stop"}, "message_stop")
        self.end_sse()

    # ------------------------------------------------ OpenAI Responses (Codex)

    def openai_responses(self, body):
        model = body.get("model") or "gpt"
        items = body.get("input") or []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        tools = body.get("tools") or []
        summary = {"cli": "codex", "model": model, "stream": bool(body.get("stream", True)),
                   "tools": len(tools), "items": len(items)}
        self.req["summary"] = summary
        last = items[-1] if items else {}
        schema = openai_schema(body)

        if schema is not None:
            summary["kind"] = "side"
            return self.openai_reply(model, [("text", json.dumps(fill_schema(schema)))])

        user = next((it for it in reversed(items) if isinstance(it, dict)
                     and it.get("role") == "user" and it.get("type", "message") == "message"), None)
        text = openai_message_text(user)

        if isinstance(last, dict) and last.get("type") == "tool_search_output":
            # The answer to our tool_search call (see below): the tools it
            # found are now callable, so make the call the user asked for.
            d = parse_directives(text)
            found = last.get("tools") or []
            call = openai_tool_call(d.get("tool", ""), d.get("args", {}), found + tools)
            summary.update(kind="tool_search_result", found=[t.get("name") for t in found
                                                             if isinstance(t, dict)])
            if call:
                summary["tool_call"] = call
                return self.openai_reply(model, [("call", call)])
            return self.openai_reply(model, [("text", f"no tool {d.get('tool')} found")])

        if isinstance(last, dict) and last.get("type", "").endswith("_call_output"):
            # The output of the tool call(s) made in the previous reply: the
            # trailing run of *_call_output items.
            outs = []
            for it in reversed(items):
                if not (isinstance(it, dict) and it.get("type", "").endswith("_call_output")):
                    break
                outs.insert(0, openai_output_text(it.get("output")))
            rtext = "\n".join(outs)
            n = STATE.record_turn({"cli": "codex", "kind": "tool_result", "text": rtext,
                                   "at_ms": self.at_ms})
            summary.update(kind="tool_result", n=n, text=rtext[:80])
            return self.openai_reply(model, [("text", "done")])

        d = parse_directives(text)
        n = STATE.record_turn({"cli": "codex", "kind": "turn", "text": text, "at_ms": self.at_ms})
        summary.update(kind="turn", n=n, text=text[:80], directives=d)
        if "fail" in d:
            return self.scripted_failure(n, d["fail"], {"error": {
                "type": "server_error", "code": None, "message": f"scripted failure {d['fail']}"}})
        if "tool" in d:
            call = openai_tool_call(d["tool"], d["args"], tools)
            if call:
                summary["tool_call"] = call
                return self.openai_reply(model, [("call", call)], **pace(d))
            if any(isinstance(t, dict) and t.get("type") == "tool_search" for t in tools):
                # Codex may hold MCP tools back ("deferred") and offer a
                # client-side tool_search instead: search first, call after.
                search = {"type": "tool_search_call", "id": new_id("ts_"),
                          "call_id": new_id("call_"), "execution": "client",
                          "arguments": {"query": f"{MCP_SERVER} {d['tool']}", "limit": 8}}
                summary["tool_search"] = search["arguments"]
                return self.openai_reply(model, [("item", search)], **pace(d))
            return self.openai_reply(model, [("text", f"no tool {d['tool']} offered")])
        return self.openai_reply(model, [("text", f"ok {n}")], **pace(d))

    def openai_reply(self, model, parts, slow=0, wait=0):
        """Streams one Responses API answer: parts are ("text", str),
        ("call", function_call_item) or ("item", any_other_output_item)."""
        resp_id = new_id("resp_")
        created = int(time.time())
        seq = [0]

        def ev(kind, **fields):
            seq[0] += 1
            self.sse(dict({"type": kind, "sequence_number": seq[0]}, **fields), kind)

        base = {"id": resp_id, "object": "response", "created_at": created, "model": model,
                "status": "in_progress", "output": []}
        self.start_sse()
        ev("response.created", response=base)
        ev("response.in_progress", response=base)
        time.sleep(wait)
        output = []
        for idx, p in enumerate(parts):
            if p[0] == "text":
                item_id = new_id("msg_")
                ev("response.output_item.added", output_index=idx, item={
                    "id": item_id, "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []})
                ev("response.content_part.added", item_id=item_id, output_index=idx,
                   content_index=0, part={"type": "output_text", "text": "", "annotations": []})
                for piece in paced(slow_pieces(p[1], slow), slow):
                    ev("response.output_text.delta", item_id=item_id, output_index=idx,
                       content_index=0, delta=piece)
                ev("response.output_text.done", item_id=item_id, output_index=idx,
                   content_index=0, text=p[1])
                part = {"type": "output_text", "text": p[1], "annotations": []}
                ev("response.content_part.done", item_id=item_id, output_index=idx,
                   content_index=0, part=part)
                item = {"id": item_id, "type": "message", "status": "completed",
                        "role": "assistant", "content": [part]}
            elif p[0] == "item":
                # Any other finished output item, sent whole.
                item = p[1]
                ev("response.output_item.added", output_index=idx, item=item)
                if slow:
                    time.sleep(slow)
            else:
                item = dict(p[1], status="completed")
                ev("response.output_item.added", output_index=idx,
                   item=dict(item, status="in_progress", arguments=""))
                if slow:
                    time.sleep(slow)
                ev("response.function_call_arguments.delta", item_id=item["id"],
                   output_index=idx, delta=item["arguments"])
                ev("response.function_call_arguments.done", item_id=item["id"],
                   output_index=idx, arguments=item["arguments"])
            ev("response.output_item.done", output_index=idx, item=item)
            output.append(item)
        ev("response.completed", response=dict(base, status="completed", output=output, usage={
            "input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 18}))
        self.end_sse()

    # ------------------------------ OpenAI Chat Completions (Copilot, ...)

    def user_agent(self):
        return (self.headers.get("User-Agent") or "").lower()

    def chat_completions(self, body):
        cli = chat_cli(self.headers, body)
        model = body.get("model") or "local-model"
        stream = bool(body.get("stream"))
        usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        names = [chat_tool_name(t) for t in body.get("tools") or []]
        names = [n for n in names if n]
        summary = {"cli": cli, "model": model, "stream": stream, "tools": len(names),
                   "messages": len(msgs)}
        self.req["summary"] = summary
        reply = lambda parts, **kw: self.chat_reply(model, stream, usage, parts, **kw)
        # The newest of the user messages that end the conversation that
        # holds typed text: Kimi Code sends a context-only message (a
        # <system-reminder>) after the typed one.
        users = list(itertools.takewhile(lambda m: m.get("role") == "user", reversed(msgs)))
        text = next((t for t in map(chat_user_text, users) if t), "")
        schema = chat_schema(body)

        # Side requests: structured output, or a request that offers no
        # tools at all (titles, summaries) while the real turns do.
        trailing = []  # the tool results that end the conversation
        for m in reversed(msgs):
            if m.get("role") != "tool":
                break
            trailing.insert(0, m)
        # Aider offers no tools at all: its turns are turns.
        if schema is not None or (not names and not trailing and cli != "aider"):
            summary.update(kind="side", text=text[:80])
            out = json.dumps(fill_schema(schema)) if schema is not None else "Offline chat"
            return reply([("text", out)])

        if trailing:
            rtext = "\n".join(chat_content_text(m.get("content")) for m in trailing)
            n = STATE.record_turn({"cli": cli, "kind": "tool_result", "text": rtext,
                                   "at_ms": self.at_ms})
            summary.update(kind="tool_result", n=n, text=rtext[:80])
            return reply([("text", "done")])

        # A message typed while a tool ran may be sent with that tool's
        # results, after them (Pi "steers"): the results, then the turn.
        steered = []
        i = len(msgs)
        while i and msgs[i - 1].get("role") == "user":
            i -= 1
        while i and msgs[i - 1].get("role") == "tool":
            steered.insert(0, msgs[i - 1])
            i -= 1
        retry = self.headers.get("X-Stainless-Retry-Count", "0")
        if steered and not (retry.isdigit() and retry != "0"):
            rtext = "\n".join(chat_content_text(m.get("content")) for m in steered)
            STATE.record_turn({"cli": cli, "kind": "tool_result", "text": rtext,
                               "at_ms": self.at_ms})
            summary["steered_tool_result"] = rtext[:80]

        d = parse_directives(text)
        entry = {"cli": cli, "kind": "turn", "text": text, "at_ms": self.at_ms}
        if retry.isdigit() and retry != "0":
            entry["retry"] = int(retry)
        n = STATE.record_turn(entry)
        summary.update(kind="turn", n=n, text=text[:80], directives=d)
        if "fail" in d:
            return self.scripted_failure(n, d["fail"], {"error": {
                "type": "server_error", "code": None, "param": None,
                "message": f"scripted failure {d['fail']}"}})
        if "tool" in d:
            name = pick_tool_name(d["tool"], names)
            if name:
                summary["tool_call"] = name
                return reply([("call", name, d["args"])], **pace(d))
            return reply([("text", f"no tool {d['tool']} offered")])
        return reply([("text", f"ok {n}")], **pace(d))

    def chat_reply(self, model, stream, usage, parts, slow=0, wait=0):
        """One Chat Completions answer; parts are ("text", str) or
        ("call", tool_name, args_dict)."""
        cid = new_id("chatcmpl-")
        created = int(time.time())
        text = "".join(p[1] for p in parts if p[0] == "text")
        calls = [{"id": new_id("call_"), "type": "function",
                  "function": {"name": p[1], "arguments": json.dumps(p[2])}}
                 for p in parts if p[0] == "call"]
        finish = "tool_calls" if calls else "stop"
        counts = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
        if not stream:
            time.sleep(wait + slow)
            message = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            return self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": counts})

        def chunk(delta, finish_reason=None):
            self.sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                      "model": model, "choices": [{"index": 0, "delta": delta,
                                                   "finish_reason": finish_reason}]})

        self.start_sse()
        chunk({"role": "assistant", "content": ""})
        time.sleep(wait)
        if text:
            for piece in paced(slow_pieces(text, slow), slow):
                chunk({"content": piece})
        for i, c in enumerate(calls):
            chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                   "function": {"name": c["function"]["name"], "arguments": ""}}]})
            if slow:
                time.sleep(slow)
            chunk({"tool_calls": [{"index": i, "function": {
                "arguments": c["function"]["arguments"]}}]})
        chunk({}, finish)
        if usage:
            self.sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                      "model": model, "choices": [], "usage": counts})
        self.sse_raw("[DONE]")
        self.end_sse()

    # ----------------------------------------------------------- Gemini

    def gemini(self, model, op, body):
        summary = {"cli": "gemini", "model": model, "op": op}
        self.req["summary"] = summary
        if op == "countTokens":
            summary["kind"] = "count_tokens"
            return self.send_json(200, {"totalTokens": approx_tokens(body)})
        if op not in ("generateContent", "streamGenerateContent"):
            summary["kind"] = "unknown"
            return self.send_json(404, {"error": {"code": 404, "message": f"no method {op}",
                                                  "status": "NOT_FOUND"}})
        stream = op == "streamGenerateContent"
        contents = body.get("contents") or []
        gen = body.get("generationConfig") or body.get("config") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        names = [f.get("name") for t in body.get("tools") or [] if isinstance(t, dict)
                 for f in t.get("functionDeclarations") or [] if isinstance(f, dict)]
        summary.update(stream=stream, tools=len(names), contents=len(contents))
        last = contents[-1] if contents else {}
        parts = last.get("parts") or [] if isinstance(last, dict) else []
        text = user_text(p.get("text", "") for p in parts
                         if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))

        # Side requests: structured output (routing, next-speaker, loop
        # checks) or any non-streaming call; the conversation streams.
        if schema is not None or gen.get("responseMimeType") == "application/json" or not stream:
            summary.update(kind="side", text=text[:80])
            out = json.dumps(fill_schema(schema)) if schema is not None else (
                "{}" if gen.get("responseMimeType") == "application/json" else "ok")
            return self.gemini_reply(model, stream, [{"text": out}])

        responses = [p["functionResponse"] for p in parts
                     if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)]
        if responses:
            rtext = "\n".join(gemini_response_text(r.get("response")) for r in responses)
            n = STATE.record_turn({"cli": "gemini", "kind": "tool_result", "text": rtext,
                                   "at_ms": self.at_ms})
            summary.update(kind="tool_result", n=n, text=rtext[:80])
            return self.gemini_reply(model, stream, [{"text": "done"}])

        d = parse_directives(text)
        n = STATE.record_turn({"cli": "gemini", "kind": "turn", "text": text, "at_ms": self.at_ms})
        summary.update(kind="turn", n=n, text=text[:80], directives=d)
        if "fail" in d:
            return self.scripted_failure(n, d["fail"], {"error": {
                "code": d["fail"], "message": f"scripted failure {d['fail']}", "status": "INTERNAL"}})
        if "tool" in d:
            name = pick_tool_name(d["tool"], names)
            if name:
                summary["tool_call"] = name
                return self.gemini_reply(model, stream,
                                         [{"functionCall": {"name": name, "args": d["args"]}}],
                                         **pace(d))
            return self.gemini_reply(model, stream, [{"text": f"no tool {d['tool']} offered"}])
        return self.gemini_reply(model, stream, [{"text": f"ok {n}"}], **pace(d))

    def gemini_reply(self, model, stream, parts, slow=0, wait=0):
        usage = {"promptTokenCount": 12, "candidatesTokenCount": 6, "totalTokenCount": 18}

        def chunk(ps, final):
            c = {"content": {"role": "model", "parts": ps}, "index": 0}
            if final:
                c["finishReason"] = "STOP"
            out = {"candidates": [c], "modelVersion": model, "responseId": new_id("")}
            if final:
                out["usageMetadata"] = usage
            return out

        time.sleep(wait)
        if not stream:
            time.sleep(slow)
            return self.send_json(200, chunk(parts, True))
        self.start_sse()
        if len(parts) == 1 and "text" in parts[0]:
            pieces = slow_pieces(parts[0]["text"], slow)
            for i, piece in enumerate(paced(pieces, slow)):
                self.sse(chunk([{"text": piece}], i == len(pieces) - 1))
        else:
            if slow:
                time.sleep(slow)
            self.sse(chunk(parts, True))
        self.end_sse()


# ------------------------------------------------------------ message text

# A text part that is nothing but one tagged block of context the CLI adds
# to the user's message (<system-reminder> from Claude, <session_context>
# from Gemini, <environment_context> from Codex, <<<BEGIN_X>>>...<<<END_X>>>
# from OpenClaw...): not what was typed.
CONTEXT_BLOCK = re.compile(
    r"\s*(?:<([A-Za-z_][\w-]*)[^>]*>.*</\1>|<<<BEGIN_(\w+)>>>.*<<<END_\2>>>)\s*", re.S)


def user_text(parts):
    """The typed text of a user message, from its text parts."""
    return "\n".join(t for t in parts if not CONTEXT_BLOCK.fullmatch(t))



def anthropic_blocks(message):
    if not message:
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def anthropic_typed_text(blocks):
    """The newest typed text of a user message. When earlier prompts got no
    answer (an error, an interrupt), Claude Code sends them together in
    one message, one text block each: the last block is the newest."""
    typed = [b.get("text", "") for b in blocks if b.get("type") == "text"
             and isinstance(b.get("text"), str) and not CONTEXT_BLOCK.fullmatch(b["text"])]
    return typed[-1] if typed else ""


def deferred_tool_names(body):
    """MCP tool names mentioned anywhere in the request (Claude Code lists
    its deferred tools by name only, in the system prompt)."""
    names = set()

    def walk(v):
        if isinstance(v, str):
            names.update(re.findall(r"\bmcp__[A-Za-z0-9_-]+", v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body)
    return sorted(names)


def tool_result_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return json.dumps(content)


def anthropic_schema(body):
    """The JSON schema a structured-output request asks for, if any."""
    for holder in (body.get("output_config"), body.get("output_format"), body):
        if not isinstance(holder, dict):
            continue
        fmt = holder.get("format") if "format" in holder else holder
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return fmt.get("schema") or fmt.get("json_schema") or {}
    return None


def openai_schema(body):
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") or {}
    return None


def openai_message_text(item):
    if not item:
        return ""
    content = item.get("content")
    if isinstance(content, str):
        return user_text([content])
    return user_text(c.get("text", "") for c in content or []
                     if isinstance(c, dict) and c.get("type") in ("input_text", "text", "output_text"))


def openai_output_text(output):
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(c.get("text", "") for c in output if isinstance(c, dict))
    if isinstance(output, dict):
        return output.get("content") or json.dumps(output)
    return json.dumps(output)


def openai_tool_call(wanted, args, tools):
    """A function_call output item for the agentbus tool `wanted`, shaped
    the way the request's tools list offers it.

    Codex offers MCP tools either as plain functions (named like
    mcp__agentbus__send_message) or grouped in a "namespace" tool named
    after the server, whose functions carry the bare tool name; a call to a
    namespaced function names the namespace in a separate field."""
    flat = []  # (namespace or None, function name)
    for t in tools:
        if not isinstance(t, dict):
            continue
        if t.get("type") == "namespace":
            for f in t.get("tools") or []:
                if isinstance(f, dict) and f.get("name"):
                    flat.append((t.get("name"), f["name"]))
        elif t.get("name"):
            flat.append((None, t["name"]))
    call = {"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
            "arguments": json.dumps(args)}
    in_ns = [f for ns, f in flat if ns and MCP_SERVER in ns]
    name = pick_tool_name(wanted, in_ns) if in_ns else None
    if name:
        ns = next(ns for ns, f in flat if ns and MCP_SERVER in ns and f == name)
        return dict(call, name=name, namespace=ns)
    name = pick_tool_name(wanted, [f for ns, f in flat if ns is None])
    if name:
        return dict(call, name=name)
    return None


# The model ids GET /v1/models lists for the Chat Completions clients.
CHAT_MODELS = ["local-model", "gpt-4o"]


def chat_cli(headers, body=None):
    """Which CLI sent a Chat Completions request: "copilot", "opencode",
    "pi", "aider", or "chat" when unknown. OpenCode names itself in its User-Agent;
    Copilot CLI and Pi both send the OpenAI SDK's ("OpenAI/JS <version>"),
    but Copilot adds X-Initiator and X-Interaction-Type headers, and each
    system prompt says whose it is."""
    ua = (headers.get("User-Agent") or "").lower()
    if "opencode" in ua:
        return "opencode"
    if "copilot" in ua or headers.get("X-Initiator") or headers.get("X-Interaction-Type"):
        return "copilot"
    if ua.startswith("pi/"):
        return "pi"
    system = ""
    for m in (body or {}).get("messages") or []:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            system = chat_content_text(m.get("content"))[:400]
            break
    if "GitHub Copilot" in system:
        return "copilot"
    if "You are opencode" in system:
        return "opencode"
    if re.search(r"\binside pi\b", system):
        return "pi"
    if system.startswith("Act as an expert software developer"):
        return "aider"
    return "chat"


def chat_tool_name(tool):
    if not isinstance(tool, dict):
        return None
    f = tool.get("function")
    if isinstance(f, dict) and isinstance(f.get("name"), str):
        return f["name"]
    return tool.get("name") if isinstance(tool.get("name"), str) else None


def chat_content_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(c.get("text", "") for c in content
                         if isinstance(c, dict) and isinstance(c.get("text"), str))
    return "" if content is None else json.dumps(content)


# Context a CLI puts before the typed text in the same string (Copilot:
# <current_datetime>...</current_datetime> and a blank line).
LEADING_CONTEXT = re.compile(r"\A(?:\s*<([A-Za-z_][\w-]*)[^>]*>.*?</\1>)+\s*", re.S)


def chat_user_text(message):
    """The typed text of a Chat Completions user message."""
    if not message:
        return ""
    content = message.get("content")
    if isinstance(content, str):
        parts = [content]
    else:
        parts = [c.get("text", "") for c in content or []
                 if isinstance(c, dict) and c.get("type") in ("text", "input_text")
                 and isinstance(c.get("text"), str)]
    return user_text(t for t in (LEADING_CONTEXT.sub("", p) for p in parts) if t)


def chat_schema(body):
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        js = fmt.get("json_schema") or {}
        return js.get("schema") or {} if isinstance(js, dict) else {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {}
    return None


def gemini_response_text(response):
    if isinstance(response, dict):
        for k in ("output", "content", "result"):
            v = response.get(k)
            if isinstance(v, str):
                return v
            if isinstance(v, list):
                return "\n".join(x.get("text", "") if isinstance(x, dict) else str(x) for x in v)
        return json.dumps(response)
    return json.dumps(response)


def approx_tokens(body):
    return max(1, len(json.dumps(body)) // 4)


def pace(d):
    """The SLOW= and WAIT= directives as reply-function arguments."""
    return {"slow": d.get("slow", 0), "wait": d.get("wait", 0)}


def slow_pieces(text, slow):
    """The reply cut into pieces: one when fast; when slow, the text then
    one "." about every quarter second (so the CLI shows the turn busy)."""
    if not slow:
        return [text]
    k = max(2, int(slow * 4))
    return [text] + [" ."] * k


def paced(pieces, slow):
    """Yields the pieces, spread evenly over `slow` seconds."""
    gap = slow / max(1, len(pieces) - 1) if slow else 0
    for i, p in enumerate(pieces):
        if i and gap:
            time.sleep(gap)
        yield p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--dump-dir", help="also write every request (headers and body) into this "
                    "existing directory, one JSON file each: for finding out what a CLI sends")
    args = ap.parse_args()
    STATE.dump_dir = args.dump_dir
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
