"""A stand-in OpenAI-compatible judge for tests: a real HTTP server speaking /v1/chat/completions
whose verdicts follow markers in the answers, so expected scores can be computed by hand.

Marker in an answer -> verdict: GOOD beats an answer without it ([[A>>B]] / [[B>>A]]); both or
neither GOOD -> [[A=B]]; NOVERDICT -> a reply without a label, then [[A=B]] when asked to
continue; CONFUSED -> two different labels (invalid)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeJudge:
    def __init__(self, key: str = "test-key"):
        self.key = key
        self.requests: list[dict] = []
        self.auth: list[str] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # /v1/models: what a preflight probes
                if self.headers.get("Authorization") != f"Bearer {judge.key}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                return self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append(body)
                judge.auth.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Bearer {judge.key}":
                    return self._send(
                        401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
                    )
                return self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": judge.verdict(body["messages"])},
                            }
                        ],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    },
                )

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def verdict(messages: list[dict]) -> str:
        user = messages[1]["content"]
        a = re.search(r"Assistant A's Answer\|>\n(.*?)\n<\|The End of Assistant A", user, re.S).group(1)
        b = re.search(r"Assistant B's Answer\|>\n(.*?)\n<\|The End of Assistant B", user, re.S).group(1)
        if "CONFUSED" in a + b:
            return "A is better [[A>B]]; on reflection [[B>A]]"
        if "NOVERDICT" in a + b and len(messages) == 2:
            return "Both answers are thoughtful."
        ga, gb = "GOOD" in a, "GOOD" in b
        return "My final verdict: " + ("[[A>>B]]" if ga and not gb else "[[B>>A]]" if gb and not ga else "[[A=B]]")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SYSTEM = "You judge two answers. End with one label: [[A>>B]], [[A>B]], [[A=B]], [[B>A]] or [[B>>A]]."
TEMPLATE = (
    "<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n"
    "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n"
    "<|The End of Assistant B's Answer|>"
)


def write_arena(tmp, questions: dict[str, str], baseline: dict[str, str]):
    """Arena-Hard v0.1-format question and baseline-answer files."""
    q = tmp / "question.jsonl"
    q.write_text(
        "".join(
            json.dumps({"question_id": k, "cluster": "c", "turns": [{"content": v}]}) + "\n"
            for k, v in questions.items()
        )
    )
    b = tmp / "baseline.jsonl"
    b.write_text(
        "".join(
            json.dumps({"question_id": k, "model_id": "base", "choices": [{"index": 0, "turns": [{"content": v}]}]})
            + "\n"
            for k, v in baseline.items()
        )
    )
    return q, b
