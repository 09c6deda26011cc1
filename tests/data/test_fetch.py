"""`miniglm fetch` against a real HTTP server on 127.0.0.1: downloads, resume, retries, errors, cleaning."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from miniglm.__main__ import main
from miniglm.data import DataError
from miniglm.data import fetch as fetch_mod
from miniglm.data.fetch import FetchError, OfflineError, RemoteFile, Source, fetch
from miniglm.data.text import clean_text, decode_bytes

PRETRAIN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pretrain"
FALLBACK_TEXT = "第一回　灵根育孕源流出　心性修持大道生\n\n诗曰：混沌未分天地乱，茫茫渺渺无人见。\n" * 400


def novel_text(name: str, chars: int = 20_000) -> str:
    """The first `chars` characters of a novel from ../shared/data (or a stand-in if it is absent)."""
    path = PRETRAIN / name
    return path.read_text(encoding="utf-8")[:chars] if path.is_file() else FALLBACK_TEXT[:chars]


class FileServer:
    """A tiny HTTP/1.1 server with Range support and scripted faults, serving bytes from a dict."""

    def __init__(self):
        self.files: dict[str, bytes] = {}  # unquoted path -> body
        self.drop_after: dict[str, int] = {}  # path -> send this many bytes then hang up (once)
        self.fail_first: dict[str, int] = {}  # path -> answer 503 this many times
        self.lie_length: dict[str, int] = {}  # path -> announce this many extra bytes, always
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = unquote(self.path)
                server.requests.append((path, self.headers.get("Range")))
                server.handle(self, path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def handle(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path not in self.files:
            h.send_error(404)
            return
        if self.fail_first.get(path, 0) > 0:
            self.fail_first[path] -= 1
            h.send_error(503)
            return
        data = self.files[path]
        size = len(data) + self.lie_length.get(path, 0)  # what the server claims
        rng = h.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng and path not in self.ignore_range else 0
        if start >= size and start:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{size}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.send_header("Content-Length", str(size - start))
        h.end_headers()
        body = data[start:]
        if path in self.drop_after:
            body = body[: self.drop_after.pop(path)]
            h.close_connection = True
        elif path in self.lie_length:
            h.close_connection = True
        h.wfile.write(body)
        h.wfile.flush()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture
def no_sleep(monkeypatch):
    """Record backoff sleeps instead of sleeping."""
    sleeps: list[float] = []
    monkeypatch.setattr(fetch_mod.time, "sleep", sleeps.append)
    return sleeps


def test_named_source_from_mirror(server, tmp_path, no_sleep):
    texts = {}
    for upstream, local in [("西游记", "xiyouji"), ("红楼梦", "hongloumeng"), ("三国演义", "sanguoyanyi"),
                            ("水浒全传", "shuihuzhuan")]:
        texts[local] = novel_text(f"{local}.txt")
        server.files[f"/mirror/sidamingzhu/src/{upstream}.txt"] = texts[local].encode("utf-8")
    files = fetch(["sidamingzhu"], tmp_path, mirror=server.url + "/mirror/{name}", progress=False)
    assert [f.path.name for f in files] == ["xiyouji.txt", "hongloumeng.txt", "sanguoyanyi.txt", "shuihuzhuan.txt"]
    for f in files:
        assert f.encoding == "utf-8"
        assert f.path.parent == tmp_path / "sidamingzhu"
        assert f.path.read_text(encoding="utf-8") == texts[f.path.stem]
    assert sorted(p.name for p in (tmp_path / "sidamingzhu").iterdir()) == sorted(f.path.name for f in files)
    # the request paths were URL-encoded (the server saw them quoted and decoded them back)
    assert server.requests[0] == ("/mirror/sidamingzhu/src/西游记.txt", None)
    assert no_sleep == []


def test_mirror_from_environment(server, tmp_path, monkeypatch):
    server.files["/src/西游记.txt"] = b"x" * 10
    for f in ("红楼梦", "三国演义", "水浒全传"):
        server.files[f"/src/{f}.txt"] = f.encode("utf-8")
    monkeypatch.setenv(fetch_mod.MIRROR_ENV, server.url)
    files = fetch(["sidamingzhu"], tmp_path, progress=False)
    assert files[1].path.read_text(encoding="utf-8") == "红楼梦"


def test_gb18030_file_is_converted_to_utf8(server, tmp_path):
    text = novel_text("hongloumeng.txt", 5000) + "\n生僻字：㐀䶵，欧元€。\n"
    server.files["/books/红楼梦.txt"] = text.encode("gb18030")
    (f,) = fetch([server.url + "/books/" + quote("红楼梦.txt")], tmp_path, name="gbk", progress=False)
    assert f.encoding == "gb18030"
    assert f.path == tmp_path / "gbk" / "红楼梦.txt"
    assert f.path.read_bytes() == text.encode("utf-8")


def test_dropped_connection_resumes_with_range(server, tmp_path, no_sleep):
    body = novel_text("xiyouji.txt", 30_000).encode("utf-8")
    server.files["/x.txt"] = body
    server.drop_after["/x.txt"] = 7001
    (f,) = fetch([server.url + "/x.txt"], tmp_path, progress=False, backoff=0.5)
    assert f.path.read_bytes() == body
    assert server.requests == [("/x.txt", None), ("/x.txt", "bytes=7001-")]
    assert no_sleep == [0.5]
    assert not list(tmp_path.rglob("*.part"))


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, no_sleep):
    body = novel_text("sanguoyanyi.txt", 9000).encode("utf-8")
    server.files["/s.txt"] = body
    server.drop_after["/s.txt"] = 100
    server.ignore_range.add("/s.txt")
    (f,) = fetch([server.url + "/s.txt"], tmp_path, progress=False)
    assert f.path.read_bytes() == body


def test_5xx_is_retried_with_backoff(server, tmp_path, no_sleep):
    server.files["/busy.txt"] = "忙".encode() * 100
    server.fail_first["/busy.txt"] = 2
    (f,) = fetch([server.url + "/busy.txt"], tmp_path, progress=False, backoff=1.0)
    assert f.path.read_text(encoding="utf-8") == "忙" * 100
    assert no_sleep == [1.0, 2.0]


def test_resume_from_part_file_left_by_an_earlier_run(server, tmp_path):
    body = novel_text("shuihuzhuan.txt", 6000).encode("utf-8")
    server.files["/r.txt"] = body
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "r.txt.part").write_bytes(body[:4096])
    (f,) = fetch([server.url + "/r.txt"], tmp_path, progress=False)
    assert f.path.read_bytes() == body
    assert server.requests == [("/r.txt", "bytes=4096-")]


def test_complete_part_file_answered_416_is_kept(server, tmp_path):
    body = "完".encode() * 50
    server.files["/done.txt"] = body
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "done.txt.part").write_bytes(body)
    (f,) = fetch([server.url + "/done.txt"], tmp_path, progress=False)
    assert f.path.read_bytes() == body


def test_part_file_longer_than_the_remote_file_starts_over(server, tmp_path, no_sleep):
    server.files["/changed.txt"] = "新".encode() * 10
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "changed.txt.part").write_bytes(b"old content, longer than the new file")
    (f,) = fetch([server.url + "/changed.txt"], tmp_path, progress=False)
    assert f.path.read_text(encoding="utf-8") == "新" * 10
    assert [r for _, r in server.requests] == ["bytes=37-", None]


def test_giving_up_keeps_part_file_for_a_later_resume(server, tmp_path, no_sleep):
    server.files["/short.txt"] = b"abc" * 1000
    server.lie_length["/short.txt"] = 10  # announces 10 bytes it never sends
    with pytest.raises(FetchError, match=r"short\.txt: download failed after 3 attempts .*run again"):
        fetch([server.url + "/short.txt"], tmp_path, progress=False, retries=2)
    assert len(no_sleep) == 2
    assert (tmp_path / "custom" / "short.txt.part").stat().st_size == 3000
    assert not (tmp_path / "custom" / "short.txt").exists()


def test_404_names_the_url(server, tmp_path, no_sleep):
    with pytest.raises(FetchError, match=r"http://127\.0\.0\.1:\d+/missing\.txt: not found \(HTTP 404\)"):
        fetch([server.url + "/missing.txt"], tmp_path, progress=False)
    assert no_sleep == []
    assert not (tmp_path / "custom" / "missing.txt").exists()


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/book.txt"


def test_offline_fails_fast_and_says_how_to_use_local_files(tmp_path, no_sleep):
    with pytest.raises(OfflineError) as e:
        fetch([_refused_url()], tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "cannot reach 127.0.0.1" in msg and "miniglm prepare path/to/*.txt" in msg and "miniglm fetch" in msg
    assert no_sleep == []  # no retries


def test_dns_failure_is_offline_too(tmp_path, monkeypatch, no_sleep):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(OfflineError, match=r"cannot reach raw\.githubusercontent\.com .*Use local files instead"):
        fetch(["sidamingzhu"], tmp_path, progress=False)
    assert no_sleep == [] and list(tmp_path.iterdir()) == []


def test_offline_through_the_cli_is_one_line_exit_2(tmp_path, capsys):
    assert main(["fetch", _refused_url(), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("miniglm fetch: error: cannot reach")


def _one_file_source(monkeypatch, server, **check) -> None:
    server.files["/b/book.txt"] = "书" .encode() * 300
    src = Source("book", "test book", server.url + "/b/", (RemoteFile("book.txt", "book.txt", **check),))
    monkeypatch.setitem(fetch_mod.SOURCES, "book", src)


def test_size_mismatch_is_an_error_and_leaves_nothing(server, tmp_path, monkeypatch):
    _one_file_source(monkeypatch, server, size=901)
    with pytest.raises(FetchError, match="size mismatch: got 900 bytes, expected 901"):
        fetch(["book"], tmp_path, progress=False)
    assert list((tmp_path / "book").iterdir()) == []


def test_sha256_mismatch_is_an_error(server, tmp_path, monkeypatch):
    _one_file_source(monkeypatch, server, sha256="0" * 64)
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch(["book"], tmp_path, progress=False)
    assert list((tmp_path / "book").iterdir()) == []


def test_matching_size_and_sha256_pass(server, tmp_path, monkeypatch):
    body = "书".encode() * 300
    _one_file_source(monkeypatch, server, size=len(body), sha256=hashlib.sha256(body).hexdigest().upper())
    (f,) = fetch(["book"], tmp_path, progress=False)
    assert f.path.read_text(encoding="utf-8") == "书" * 300


def test_existing_output_is_skipped_unless_forced(server, tmp_path):
    server.files["/a.txt"] = b"new"
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "a.txt").write_text("old", encoding="utf-8")
    (f,) = fetch([server.url + "/a.txt"], tmp_path, progress=False)
    assert f.skipped and f.path.read_text(encoding="utf-8") == "old" and server.requests == []
    (f,) = fetch([server.url + "/a.txt"], tmp_path, progress=False, force=True)
    assert not f.skipped and f.path.read_text(encoding="utf-8") == "new"


def test_local_files_and_directories_are_converted(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes("甲\r\n乙&nbsp;丙<br>丁\r".encode("gb18030"))
    (src / "sub" / "b.txt").write_bytes("\ufeff天龙八部".encode())
    files = fetch([str(src)], tmp_path / "raw", name="mine", progress=False)
    assert [(f.path.name, f.encoding) for f in files] == [("a.txt", "gb18030"), ("b.txt", "utf-8")]
    assert (tmp_path / "raw" / "mine" / "a.txt").read_text(encoding="utf-8") == "甲\n乙 丙\n丁\n"
    assert (tmp_path / "raw" / "mine" / "b.txt").read_bytes() == "天龙八部".encode()


def test_unknown_target_and_undecodable_file(tmp_path):
    with pytest.raises(FetchError, match="not a named source, URL or existing path: nosuch .*sidamingzhu, jinyong"):
        fetch(["nosuch"], tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\xff\xfe\xff\x80")
    with pytest.raises(DataError, match=r"bad\.txt: neither UTF-8 \(invalid byte at offset 2\) nor GB18030"):
        fetch([str(bad)], tmp_path / "raw")
    assert not (tmp_path / "raw" / "custom" / "bad.txt").exists()


def test_two_inputs_to_one_file_is_an_error(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.txt").write_text("t", encoding="utf-8")
    with pytest.raises(FetchError, match="two inputs would both be written to"):
        fetch([str(tmp_path / "x" / "same.txt"), str(tmp_path / "y" / "same.txt")], tmp_path / "raw")


def test_cli_fetch_and_list(server, tmp_path, capsys):
    server.files["/c.txt"] = "三国".encode("gb18030")
    assert main(["fetch", server.url + "/c.txt", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "c.txt: 2 chars from gb18030" in out
    assert main(["fetch", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "sidamingzhu" in listing and "jinyong" in listing
    assert "weiyinfu/SiDaMingZhu/fa19bb1c4bae7c06a5cd157b867494eb94c228c1/src/西游记.txt" in listing
    with pytest.raises(SystemExit) as e:
        main(["fetch"])
    assert e.value.code == 2


# --------------------------------------------------------------------------- decoding and cleaning rules


def test_decode_bytes_detects_encodings():
    text = "金庸：射雕英雄传 ABC"
    assert decode_bytes(text.encode("utf-8"), "f") == (text, "utf-8")
    assert decode_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"), "f") == (text, "utf-8")
    assert decode_bytes(text.encode("gb18030"), "f") == (text, "gb18030")
    assert decode_bytes(text.encode("utf-16"), "f") == (text, "utf-16")
    with pytest.raises(DataError, match="f: neither UTF-8"):
        decode_bytes(b"\x80\x80\xff", "f")


@pytest.mark.parametrize("raw, clean", [
    ("a\r\nb\rc\n", "a\nb\nc\n"),
    ("\ufeff正文\ufeff", "正文"),
    ("第一回<br/>正文</p><p>下段", "第一回\n正文\n\n下段"),
    ('<div class="x">说</div><FONT color=red>道</font>', "说道"),
    ("<!-- ad -->前<script>var x = 1;</script>后", "前后"),
    ("&nbsp;&nbsp;他说&ldquo;好&rdquo;&amp;&#27721;&#x5B57;", "  他说“好”&汉字"),
    ("&unknownentity; AT&T", "&unknownentity; AT&T"),
    ("乱码???和\ufffd\ufffd\ufffd\ufffd结束?\ufffd?", "乱码和结束"),
    ("问? 两个?? 全角？？？", "问? 两个?? 全角？？？"),
    ("#include <iostream> a < b > c", "#include <iostream> a < b > c"),
])
def test_clean_text_rules(raw, clean):
    assert clean_text(raw)[0] == clean


def test_clean_text_counts_what_it_removed():
    _, stats = clean_text("<p>x</p>&nbsp;???y\ufffd\ufffd\ufffd")
    assert (stats.html_tags, stats.html_entities, stats.mojibake_runs) == (2, 1, 2)
