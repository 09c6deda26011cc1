"""A fake OpenAI-compatible judge on 127.0.0.1 for the judge tests: its verdicts follow the answers.

The answer(s) in a prompt choose the reply, so one server plays every scenario:
    grading       "好" -> all 9, overall 8 · "差" -> all 2 · "乱" -> prose with no scores (unparseable)
                  "慢" -> the first request sleeps past the client's timeout · "忙" -> the first
                  request gets 429 + Retry-After: 1 · "崩" -> 500 every time · "拒" -> 400
                  anything else -> every score 1 + len(answer) % 10
    other prompts are graded as if they were the answer
    pairwise      "乱" in either answer -> no verdict line · "偏" -> always [[A]] (pure position bias)
                  else the answer with the higher grading score wins ([[C]] when equal)
Every request is recorded (path, headers, body); `in_flight_max` is the most handled at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRADE_ANSWER = re.compile(r"\[AI助手的答案开始\]\n(.*)\n\[AI助手的答案结束\]", re.S)
PAIR_ANSWERS = re.compile(r"\[助手A的答案开始\]\n(.*)\n\[助手A的答案结束\].*\[助手B的答案开始\]\n(.*)\n\[助手B的答案结束\]", re.S)
DIMS = ("事实正确性", "满足用户需求", "逻辑连贯性", "完备性")


def score(answer: str) -> int:
    if "好" in answer:
        return 8
    if "差" in answer:
        return 2
    return 1 + len(answer) % 10


class FakeJudge:
    def __init__(self, key: str | None = None, delay: float = 0.0, slow_seconds: float = 1.0):
        self.key = key  # when set, requests without "Bearer <key>" get 401
        self.delay = delay  # seconds every reply takes
        self.slow_seconds = slow_seconds
        self.requests: list[dict] = []
        self.seen: Counter[str] = Counter()
        self.in_flight = self.in_flight_max = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, prompt: str, nth: int) -> tuple[int, dict[str, str], str | None]:
        """(status, headers, reply text or None for an error body) for the nth request of `prompt`."""
        pair, graded = PAIR_ANSWERS.search(prompt), GRADE_ANSWER.search(prompt)
        answers = pair.groups() if pair else graded.groups() if graded else (prompt,)
        text = "".join(answers)
        if "崩" in text:
            return 500, {}, None
        if "拒" in text:
            return 400, {}, None
        if "忙" in text and nth == 1:
            return 429, {"Retry-After": "1"}, None
        if "慢" in text and nth == 1:
            time.sleep(self.slow_seconds)
        if "乱" in text:
            return 200, {}, "两个回答都还行吧，我给七分。"
        if pair:
            a, b = answers
            mark = "A" if "偏" in text or score(a) > score(b) else "B" if score(b) > score(a) else "C"
            return 200, {}, f"助手A与参考答案相比……助手B……\n结论：[[{mark}]]"
        s = score(answers[0])
        verdict = json.dumps({**dict.fromkeys(DIMS, s), "综合得分": s}, ensure_ascii=False)
        return 200, {}, f"与参考答案相比，回答得分{s}。理由：示例。\n{verdict}"

    def _handler(self):
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    prompt = body["messages"][-1]["content"]
                    judge.seen[prompt] += 1
                    nth = judge.seen[prompt]
                    judge.in_flight += 1
                    judge.in_flight_max = max(judge.in_flight_max, judge.in_flight)
                try:
                    time.sleep(judge.delay)
                    if judge.key and self.headers.get("Authorization") != f"Bearer {judge.key}":
                        status, headers, text = 401, {}, None
                    else:
                        status, headers, text = judge.reply(prompt, nth)
                finally:
                    with judge.lock:
                        judge.in_flight -= 1
                if text is None:
                    payload = {"error": {"message": f"fake error {status}"}}
                else:
                    payload = {"id": "x", "object": "chat.completion", "model": body["model"],
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text)}}
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                try:
                    self.send_response(status)
                    for k, v in {**headers, "Content-Type": "application/json",
                                 "Content-Length": str(len(data))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        return Handler
