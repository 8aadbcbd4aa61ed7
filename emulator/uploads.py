"""Streaming multipart parsing for ``POST /imports``.

Starlette's ``request.form()`` reads the whole body whatever its size; here the file part goes straight
to a file on disk while its bytes are counted, and past the size limit nothing more is written (the rest
of the body is read and thrown away, up to a bound, so that the client gets a clean 413 instead of a
reset connection). The UTF-8 check runs on the fly with an incremental decoder.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from emulator.errors import ApiError

MAX_FIELD_BYTES = 64 * 1024
ACCEPTED_FILE_TYPES = {
    "",
    "text/csv",
    "text/plain",
    "application/csv",
    "application/octet-stream",
    "application/vnd.ms-excel",
}


@dataclass
class Upload:
    """The parsed form: text fields, and the file written to ``file_path``."""

    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    file_name: str | None = None
    file_type: str = ""
    file_size: int = 0
    too_large: bool = False
    utf8_error: str | None = None
    field_too_large: str | None = None


class _Collector:
    """python-multipart callbacks that fill an ``Upload``."""

    def __init__(self, dest: Path, max_file_bytes: int) -> None:
        self.upload = Upload()
        self.dest = dest
        self.max_file_bytes = max_file_bytes
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self._handle: Any = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._file_seen = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()
        self._name = ""
        self._is_file = False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = b""
        self._header_value = b""

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise MultipartParseError("a part has no Content-Disposition: form-data; name=...")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options or self._name == "file"
        if self._is_file and self._name == "file" and not self._file_seen:
            self._file_seen = True
            up = self.upload
            up.file_name = options.get(b"filename", b"").decode("utf-8", "replace")
            up.file_type = parse_options_header(self._headers.get(b"content-type", b""))[0].decode("latin-1").lower()
            up.file_path = self.dest
            self._handle = self.dest.open("wb")
            self._decoder = codecs.getincrementaldecoder("utf-8")()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None:
            up = self.upload
            up.file_size += len(chunk)
            if up.file_size > self.max_file_bytes:
                up.too_large = True
                return
            self._handle.write(chunk)
            if up.utf8_error is None and self._decoder is not None:
                try:
                    self._decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    offset = up.file_size - len(chunk) + exc.start
                    up.utf8_error = f"the file is not UTF-8: invalid byte 0x{chunk[exc.start]:02x} at offset {offset}"
        elif not self._is_file:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                self.upload.field_too_large = self._name
                self._value = bytearray()

    def part_end(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            if self.upload.utf8_error is None and self._decoder is not None and not self.upload.too_large:
                try:
                    self._decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    self.upload.utf8_error = "the file is not UTF-8: it ends inside a multi-byte character"
        elif not self._is_file and self._name:
            self.upload.fields.setdefault(self._name, self._value.decode("utf-8", "replace"))

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_upload(request: Request, dest: Path, max_file_bytes: int) -> Upload:
    """Parse the multipart body of ``request``; the file part lands in ``dest``.

    Raises 415 when the body is not multipart, 400 when it is malformed, 413 when the file is larger
    than ``max_file_bytes`` (the partial file is removed).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "none"
        raise ApiError(415, f"Imports must be sent as multipart/form-data (got Content-Type: {shown})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "The multipart Content-Type has no boundary parameter")
    drain_limit = 4 * max_file_bytes + 1024 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > drain_limit:
        raise ApiError(413, _too_large(max_file_bytes, int(declared)), headers={"Connection": "close"})
    collector = _Collector(dest, max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if collector.upload.too_large and received > drain_limit:
                raise ApiError(413, _too_large(max_file_bytes, received), headers={"Connection": "close"})
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        collector.close()
        _discard(dest)
        raise ApiError(400, f"The multipart body is malformed: {exc}") from None
    except ClientDisconnect:
        collector.close()
        _discard(dest)
        raise
    except ApiError:
        collector.close()
        _discard(dest)
        raise
    collector.close()
    upload = collector.upload
    if upload.too_large:
        _discard(dest)
        raise ApiError(413, _too_large(max_file_bytes, upload.file_size))
    if not collector.ended:
        _discard(dest)
        raise ApiError(400, "The multipart body is malformed: it ends before the closing boundary")
    return upload


def _too_large(limit: int, size: int) -> str:
    return (
        f"The file is larger than the {limit:,} bytes allowed per import (received more than {limit:,}; "
        f"{size:,} so far). Split it into smaller files."
    )


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def inspect_csv(path: Path, delimiter: str) -> tuple[list[str], int]:
    """The header and the number of data rows (blank lines are not rows); 422 for an unusable file."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise ApiError(
                    422,
                    "The file is empty: its first row must hold the column headers",
                    validation_errors=[("file", "no header row")],
                )
            total = 0
            for cells in reader:
                if cells and not (len(cells) == 1 and not cells[0].strip()):
                    total += 1
        except csv.Error as exc:
            raise ApiError(
                422,
                f"The CSV cannot be read near line {reader.line_num}: {exc}",
                validation_errors=[("file", str(exc))],
            ) from None
    names = [cell.strip() for cell in header]
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicates:
        raise ApiError(
            422,
            f"The header repeats column(s) {', '.join(duplicates)}; each column may appear once",
            validation_errors=[("file", f"duplicate header {d}") for d in duplicates],
        )
    if any(not n for n in names):
        raise ApiError(
            422,
            "The header has an empty column name; every column needs a header",
            validation_errors=[("file", "empty header")],
        )
    return names, total
