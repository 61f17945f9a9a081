"""Downloads through a real HTTP server on 127.0.0.1: checksum, Range resume, safe extraction."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vc.data import arctic
from vc.data.arctic import ArcticCorpus, download_speaker, folder_name, read_speaker
from vc.errors import DataError


class _Server:
    """Serves ``files`` (name -> bytes) with Range support; records what each request asked for."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.bytes_sent = 0
        self.honour_range = True
        self.cut_next_after: int | None = None  # send only this many bytes of the next body, then hang up
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data = server.files.get(self.path.lstrip("/"))
                server.ranges.append(self.headers.get("Range"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next_after is not None:
                    body, server.cut_next_after = body[: server.cut_next_after], None
                    self.close_connection = True
                self.wfile.write(body)
                server.bytes_sent += len(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/packed/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add(self, name: str, data: bytes) -> None:
        self.files[f"packed/{name}"] = data


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _archive(corpus: Path, spk: str, n: int = 3) -> bytes:
    """A cmu_us_<spk>_arctic.tar.bz2 of ``n`` utterances of a synthetic speaker."""
    folder = corpus / folder_name(spk)
    lines = (folder / "etc" / "txt.done.data").read_text().splitlines()[:n]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for line in lines:
            utt = line.split()[1]
            tar.add(folder / "wav" / f"{utt}.wav", f"{folder.name}/wav/{utt}.wav")
        info = tarfile.TarInfo(f"{folder.name}/etc/txt.done.data")
        text = ("\n".join(lines) + "\n").encode()
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return buf.getvalue()


@pytest.fixture
def sya_archive(synthetic_arctic, server) -> tuple[bytes, str]:
    data = _archive(synthetic_arctic, "sya")
    server.add("cmu_us_sya_arctic.tar.bz2", data)
    return data, hashlib.sha256(data).hexdigest()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_verifies_extracts_and_cleans_up(server, sya_archive, tmp_path):
    _, digest = sya_archive
    folder = download_speaker("sya", tmp_path, mirror=server.url, sha256=digest)
    assert folder == tmp_path / "cmu_us_sya_arctic"
    assert len(read_speaker(folder)) == 3
    assert _leftovers(tmp_path) == ["cmu_us_sya_arctic"]
    assert server.ranges == [None]


def test_partial_download_resumes_with_range(server, sya_archive, tmp_path):
    data, digest = sya_archive
    half = len(data) // 2
    (tmp_path / "cmu_us_sya_arctic.tar.bz2.part").write_bytes(data[:half])
    download_speaker("sya", tmp_path, mirror=server.url.rstrip("/"), sha256=digest)
    assert server.ranges == [f"bytes={half}-"] and server.bytes_sent == len(data) - half
    assert len(read_speaker(tmp_path / "cmu_us_sya_arctic")) == 3


def test_interrupted_download_resumes_on_the_next_call(server, sya_archive, tmp_path):
    data, digest = sya_archive
    server.cut_next_after = 1000
    with pytest.raises(DataError, match="stopped after 1000 of .*run again to resume"):
        download_speaker("sya", tmp_path, mirror=server.url, sha256=digest)
    assert (tmp_path / "cmu_us_sya_arctic.tar.bz2.part").stat().st_size == 1000
    download_speaker("sya", tmp_path, mirror=server.url, sha256=digest)
    assert server.ranges == [None, "bytes=1000-"]
    assert _leftovers(tmp_path) == ["cmu_us_sya_arctic"]


def test_server_without_range_support_restarts_cleanly(server, sya_archive, tmp_path):
    data, digest = sya_archive
    server.honour_range = False
    (tmp_path / "cmu_us_sya_arctic.tar.bz2.part").write_bytes(data[:100])
    download_speaker("sya", tmp_path, mirror=server.url, sha256=digest)
    assert server.bytes_sent == len(data)
    assert _leftovers(tmp_path) == ["cmu_us_sya_arctic"]


def test_checksum_mismatch_deletes_the_download(server, sya_archive, tmp_path):
    _, digest = sya_archive
    wrong = "0" * 64
    with pytest.raises(DataError) as err:
        download_speaker("sya", tmp_path, mirror=server.url, sha256=wrong)
    message = str(err.value)
    assert f"{server.url}cmu_us_sya_arctic.tar.bz2" in message and wrong in message and digest in message
    assert "data.corpus.mirror" in message and "data.corpus.verify_checksum=false" in message
    assert _leftovers(tmp_path) == []


def test_unknown_checksum_needs_a_digest_or_no_check(server, sya_archive, tmp_path):
    with pytest.raises(DataError, match="No known SHA-256.*verify_checksum=false"):
        download_speaker("sya", tmp_path, mirror=server.url)
    assert server.ranges == []
    assert download_speaker("sya", tmp_path, mirror=server.url, verify_checksum=False).is_dir()


def test_archive_escaping_root_is_refused(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    server.add("cmu_us_evl_arctic.tar.bz2", buf.getvalue())
    root = tmp_path / "root"
    with pytest.raises(DataError, match="outside the folder"):
        download_speaker("evl", root, mirror=server.url, verify_checksum=False)
    assert not (tmp_path / "escaped.txt").exists() and _leftovers(root) == []


def test_missing_file_on_the_mirror(server, tmp_path):
    with pytest.raises(DataError, match=r"cmu_us_awb_arctic.tar.bz2: HTTP 404.*data.corpus.mirror"):
        download_speaker("awb", tmp_path, mirror=server.url)


def test_arctic_corpus_downloads_both_speakers(server, synthetic_arctic, tmp_path, monkeypatch):
    for spk in ("sya", "syb"):
        data = _archive(synthetic_arctic, spk)
        server.add(f"cmu_us_{spk}_arctic.tar.bz2", data)
        monkeypatch.setitem(arctic.SHA256, spk, hashlib.sha256(data).hexdigest())
    corpus = ArcticCorpus(tmp_path, "sya", "syb", mirror=server.url)
    corpus.prepare()
    corpus.prepare()  # the folders are there now: no second download
    assert len(server.ranges) == 2
    assert corpus.load().summary() == "3 pairs (sya -> syb); dropped 0 ids only in sya, 0 only in syb"
