"""Corpus download: named sources, URLs and local files -> clean UTF-8 text in `data/raw/<name>/`.

Owns the table of named sources and the download itself (stdlib `urllib`, no extra dependency):
streamed to `<file>.part` with a progress bar; after a dropped connection, a timeout or a 5xx
answer it retries with exponential backoff and resumes with an HTTP Range request; the body is
checked against Content-Length (and the table's size/sha256 where known). Then the bytes are
decoded (UTF-8 or GB18030, see `miniglm.data.text.decode_bytes`), cleaned (`clean_text`) and
written atomically as `<out>/<name>/<file>.txt`; the `.part` file is removed. Local files go
through the same decode-and-clean step. A DNS failure or a refused connection fails at once with
one line that says how to use local files instead.

The named sources are data, not code (`SOURCES`). Their URLs were written down offline and could
not be checked from the machine that wrote them; sizes and checksums are optional per file and
only given where known. `--mirror URL` (or `$MINIGLM_MIRROR`) replaces a named source's base URL,
e.g. for a local copy; a `{name}` in it becomes the source's name.
Every file is capped at `max_bytes` (`--max-bytes`, default 1 GiB): checked against Content-Length
before a download starts and again while it streams, and against the size of a local file.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlparse
from urllib.request import Request, urlopen

from miniglm.data import DataError
from miniglm.data.text import CleanStats, clean_text, decode_bytes
from miniglm.io import atomic_write
from miniglm.tokenizer import file_sha256

DEFAULT_OUT = "data/raw"
MIRROR_ENV = "MINIGLM_MIRROR"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
CHUNK = 1 << 16
MAX_BYTES = 1 << 30  # default cap on one file: the named sources are a few MB each; 0 = no cap


class FetchError(DataError):
    """A download or conversion that cannot succeed as asked (404, checksum mismatch, ...)."""


class OfflineError(FetchError):
    """The host cannot be reached at all (no DNS, connection refused, no route)."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # under the source's base URL, not yet URL-encoded
    filename: str  # written as <out>/<source name>/<filename>
    size: int | None = None  # bytes as served, when known
    sha256: str | None = None  # of the bytes as served, when known


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    base_url: str
    files: tuple[RemoteFile, ...]


_SIDAMINGZHU = "https://raw.githubusercontent.com/weiyinfu/SiDaMingZhu/fa19bb1c4bae7c06a5cd157b867494eb94c228c1/"
_JYWX = "https://raw.githubusercontent.com/loyalpartner/jywxFenxi/master/"
_JINYONG = (("shediao", "射雕英雄传"), ("shendiao", "神雕侠侣"), ("yitian", "倚天屠龙记"), ("tianlong", "天龙八部"),
            ("xiaoao", "笑傲江湖"), ("luding", "鹿鼎记"), ("shujian", "书剑恩仇录"), ("bixue", "碧血剑"),
            ("xueshan", "雪山飞狐"), ("feihu", "飞狐外传"), ("xiake", "侠客行"), ("liancheng", "连城诀"),
            ("baima", "白马啸西风"), ("yuanyang", "鸳鸯刀"), ("yuenv", "越女剑"))

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("sidamingzhu", "the Four Classic Novels 四大名著 (weiyinfu/SiDaMingZhu, pinned commit)", _SIDAMINGZHU, (
        RemoteFile("src/西游记.txt", "xiyouji.txt"),
        RemoteFile("src/红楼梦.txt", "hongloumeng.txt"),
        RemoteFile("src/三国演义.txt", "sanguoyanyi.txt"),
        RemoteFile("src/水浒全传.txt", "shuihuzhuan.txt"),
    )),
    # The repository the original MiniGLM course fetched Jin Yong's novels from (branch master).
    Source("jinyong", "Jin Yong's 15 novels 金庸小说 (loyalpartner/jywxFenxi, as in the original course)", _JYWX,
           tuple(RemoteFile(f"{title}.txt", f"{slug}.txt") for slug, title in _JINYONG)),
)}


@dataclass
class FetchedFile:
    """One file written (or skipped because it exists) by `fetch`."""

    path: Path
    origin: str  # URL or local path it came from
    encoding: str = ""
    chars: int = 0
    cleaned: CleanStats | None = None
    skipped: bool = False


class _Retryable(Exception):
    """A transient failure: the connection dropped, timed out, or the server answered 5xx."""


class _StalePart(_Retryable):
    """The `.part` file cannot be resumed (the remote file changed); start over."""


# --------------------------------------------------------------------------- download


def offline_message(url: str, reason: object) -> str:
    host = urlparse(url).netloc or url
    return (f"cannot reach {host} ({reason}); offline? Use local files instead: "
            f"`miniglm fetch path/to/book.txt` to convert one, or `miniglm prepare path/to/*.txt`")


def _is_offline(reason: object) -> bool:
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse | None:
    """Open `url` from byte `have` on; None means the `.part` file already holds the whole body."""
    headers = {"User-Agent": "miniglm-fetch", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        e.close()
        if e.code == 416 and have:
            if e.headers.get("Content-Range", "").endswith(f"/{have}"):
                return None
            raise _StalePart(f"HTTP 416: the partial file ({have} bytes) does not fit the remote file") from None
        if e.code in RETRY_STATUS:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        if e.code == 404:
            raise FetchError(f"{url}: not found (HTTP 404)") from None
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except URLError as e:
        if _is_offline(e.reason):
            raise OfflineError(offline_message(url, e.reason)) from None
        raise _Retryable(str(e.reason)) from None
    except (OSError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {e}") from None


def _expected_total(resp: http.client.HTTPResponse, start: int) -> int | None:
    """Full body size from Content-Range (206) or Content-Length (200), if the server says."""
    content_range = resp.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _too_big(url: str, size: int, max_bytes: int) -> FetchError:
    return FetchError(f"{url}: {size:,} bytes is over the --max-bytes limit of {max_bytes:,} "
                      f"(raise it, or 0 for no limit)")


def _download_once(url: str, part: Path, timeout: float, progress: bool, max_bytes: int = 0) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, have, timeout)
    except _StalePart:
        part.unlink()
        raise
    if resp is None:
        return
    with resp:
        start = have if resp.status == 206 else 0
        if start and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            part.unlink()  # an answer for some other range: start over
            raise _Retryable(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
        total = _expected_total(resp, start)
        if max_bytes and total is not None and total > max_bytes:
            raise _too_big(url, total, max_bytes)  # said up front: nothing downloaded
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=unquote(Path(urlparse(url).path).name), disable=not progress, leave=False) as bar:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retryable(f"connection dropped ({type(e).__name__})") from None
                if not chunk:
                    break
                if max_bytes and f.tell() + len(chunk) > max_bytes:  # no or a false Content-Length
                    f.close()
                    part.unlink()
                    raise _too_big(url, f.tell() + len(chunk), max_bytes)
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retryable(f"connection closed after {got} of {total} bytes")
    if total is not None and got > total:
        part.unlink()
        raise FetchError(f"{url}: received {got} bytes but the server announced {total}")


def download(url: str, part: Path, *, size: int | None = None, sha256: str | None = None, retries: int = 4,
             backoff: float = 1.0, timeout: float = 30.0, progress: bool = True, max_bytes: int = MAX_BYTES) -> None:
    """Fill `part` with the body of `url`, resuming a previous partial download; verify it."""
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout, progress, max_bytes)
            break
        except _Retryable as e:
            if attempt == retries:
                raise FetchError(f"{url}: download failed after {retries + 1} attempts ({e}); "
                                 f"run again to resume") from None
            time.sleep(backoff * 2**attempt)
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise FetchError(f"{url}: size mismatch: got {got} bytes, expected {size} (partial file deleted)")
    if sha256 is not None and (digest := file_sha256(part)) != sha256.lower():
        part.unlink()
        raise FetchError(f"{url}: sha256 mismatch: got {digest}, expected {sha256} (partial file deleted)")


# --------------------------------------------------------------------------- decode, clean, write


def convert(data: bytes, origin: str, dest: Path) -> FetchedFile:
    """Raw bytes -> cleaned UTF-8 text at `dest` (written atomically)."""
    text, encoding = decode_bytes(data, origin)
    text, stats = clean_text(text)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, text)
    return FetchedFile(dest, origin, encoding, len(text), stats)


def _txt_name(name: str) -> str:
    return (Path(name).stem or "download") + ".txt"


@dataclass
class _Job:
    origin: str  # URL or local path
    dest: Path
    size: int | None = None
    sha256: str | None = None


def _jobs(targets: Sequence[str], out: Path, name: str, mirror: str | None) -> list[_Job]:
    """What each command-line target means: a named source, a URL, a local file or directory."""
    jobs: list[_Job] = []
    for target in targets:
        if target in SOURCES:
            src = SOURCES[target]
            base = mirror.replace("{name}", src.name) if mirror else src.base_url
            base = base if base.endswith("/") else base + "/"
            jobs += [_Job(base + quote(f.path), out / src.name / f.filename, f.size, f.sha256) for f in src.files]
        elif urlparse(target).scheme in ("http", "https"):
            jobs.append(_Job(target, out / name / _txt_name(unquote(urlparse(target).path.rsplit("/", 1)[-1]))))
        elif Path(target).is_dir():
            files = sorted(p for p in Path(target).rglob("*.txt") if p.is_file())
            if not files:
                raise FetchError(f"{target}: directory holds no .txt files")
            jobs += [_Job(str(p), out / name / p.name) for p in files]
        elif Path(target).is_file():
            jobs.append(_Job(target, out / name / _txt_name(Path(target).name)))
        else:
            raise FetchError(f"not a named source, URL or existing path: {target} "
                             f"(named sources: {', '.join(SOURCES)})")
    dests = [j.dest for j in jobs]
    if dup := next((d for d in dests if dests.count(d) > 1), None):
        raise FetchError(f"two inputs would both be written to {dup}; fetch them with different --name")
    return jobs


def fetch(targets: Sequence[str], out: str | Path = DEFAULT_OUT, *, name: str = "custom", mirror: str | None = None,
          force: bool = False, retries: int = 4, backoff: float = 1.0, timeout: float = 30.0,
          progress: bool = True, max_bytes: int = MAX_BYTES) -> list[FetchedFile]:
    """Fetch named sources, URLs and local files into `<out>/<name>/*.txt` (see the module docstring)."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    done: list[FetchedFile] = []
    for job in _jobs(targets, Path(out), name, mirror):
        if job.dest.exists() and not force:
            done.append(FetchedFile(job.dest, job.origin, skipped=True))
            continue
        if not urlparse(job.origin).scheme.startswith("http"):
            if max_bytes and (size := Path(job.origin).stat().st_size) > max_bytes:
                raise _too_big(job.origin, size, max_bytes)
            done.append(convert(Path(job.origin).read_bytes(), job.origin, job.dest))
            continue
        part = job.dest.with_name(job.dest.name + ".part")
        download(job.origin, part, size=job.size, sha256=job.sha256, retries=retries, backoff=backoff,
                 timeout=timeout, progress=progress, max_bytes=max_bytes)
        done.append(convert(part.read_bytes(), job.origin, job.dest))
        part.unlink()
    return done
