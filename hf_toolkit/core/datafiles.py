"""Local data files checked before, or when, the ``datasets`` builders read them, so a broken file
is one message with its file and line (what, where, how to fix) rather than a builder's traceback.

- :func:`check_shape`: a CSV/TSV whose rows do not all have the header's number of fields (pandas
  would silently fill short rows with nulls). Run on every CSV/TSV before it is loaded.
- :func:`explain_failure`: after a builder failed, the first line that is not text in the
  expected encoding (and the ``data.encoding`` to use: gb18030 when the bytes look like Chinese
  GB18030/GBK, :func:`encoding_hint`), or the first line that is not JSON.
- :func:`row_lines`: the line each row of a CSV/TSV/JSONL file starts on, so a message about
  rows (an empty text, a missing label) can name the lines to fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hf_toolkit.errors import DataError

# How each command takes a file's encoding: the advice names an option the command has.
SET_IN_RECIPE = "set data.encoding to the file's encoding"


def encoding_hint(how: str = SET_IN_RECIPE, path: Path | None = None) -> str:
    """The fix for a file that is not in the expected encoding; `how` says where the encoding is given.
    gb18030 when the start of `path` looks like Chinese GBK/GB18030 (latin-1 would read it without an
    error, as mojibake)."""
    if path is not None:
        with open(path, "rb") as handle:
            if looks_like_gb18030(handle.read(1 << 16)):
                return (f"its bytes look like Chinese in GB18030/GBK: {how}, gb18030 (it reads GBK and GB2312 files "
                        "too; latin-1 or cp1252 would read them as mojibake), or convert the file to UTF-8")
    return f"{how} (e.g. latin-1 or cp1252), or convert the file to UTF-8"


def check_shape(path: Path, shown: str, *, delimiter: str, encoding: str, how: str = SET_IN_RECIPE) -> None:
    """A CSV/TSV whose data rows have another number of fields than its header: the first such line."""
    try:
        with open(path, newline="", encoding=encoding) as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            rows = 0
            for row in reader:
                rows += bool(row)
                if row and len(row) != len(header):
                    kind = "TSV" if delimiter == "\t" else "CSV"
                    raise DataError(
                        f"{shown}:{reader.line_num}: {len(row)} fields where the header has {len(header)} "
                        f"({', '.join(header)}); every {kind} row needs one value per column (quote values that "
                        "contain the delimiter)"
                    )
            if not rows:
                raise DataError(f"{shown}: no rows, only the header line; give a file with at least one row")
    except UnicodeDecodeError:
        explain_failure(path, shown, kind="csv", encoding=encoding, how=how)
    except csv.Error as error:
        raise DataError(f"{shown}: not a valid CSV file ({error})") from None


def explain_failure(path: Path, shown: str, *, kind: str, encoding: str, how: str = SET_IN_RECIPE) -> None:
    """Raise a DataError naming the first undecodable or (for json) unparsable line; return when none is found.
    `how` says how the command takes another encoding (:func:`encoding_hint`)."""
    _check_encoding(path, shown, encoding, how)
    if kind == "json":
        _check_json(path, shown, encoding)


def _check_encoding(path: Path, shown: str, encoding: str, how: str) -> None:
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{shown}:{number}: not {encoding} text (byte {line[error.start:error.start + 1]!r} at column "
                    f"{error.start + 1}); {encoding_hint(how, path)}"
                ) from None


# GB2312's two-byte range (both bytes 0xA1-0xFE): where GBK/GB18030 put the common Chinese characters
# and full-width punctuation. Latin-1 or cp1252 text can decode as GB18030 too (an accented letter
# then an ASCII letter is a valid pair), but its pairs fall outside this range.
_GB2312_SHARE = 0.9


def looks_like_gb18030(raw: bytes) -> bool:
    """Whether `raw` (the start of a file) is Chinese text in GB18030/GBK/GB2312: it decodes as GB18030,
    and at least 90% of its non-ASCII characters are two-byte GB2312 characters (and it is not UTF-8)."""
    if _decodes(raw, "utf-8"):
        return False
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as error:
        if len(raw) - error.start > 3:  # not just a character cut at the end of the sample
            return False
        text = raw[: error.start].decode("gb18030")
    wide = [char.encode("gb18030") for char in text if ord(char) > 0x7F]
    gb2312 = sum(len(b) == 2 and b[0] >= 0xA1 and b[1] >= 0xA1 for b in wide)
    return bool(wide) and gb2312 >= _GB2312_SHARE * len(wide)


def _decodes(raw: bytes, encoding: str) -> bool:
    """Whether `raw` is `encoding` text, a character cut at the end of the sample aside."""
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as error:
        return len(raw) - error.start <= 3 and error.end == len(raw)
    return True


def _check_json(path: Path, shown: str, encoding: str) -> None:
    """One JSON document, or JSON lines (one object a line): the first line that breaks it."""
    text = path.read_text(encoding=encoding)
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as document_error:
        lines = text.splitlines()
        first = next((line for line in lines if line.strip()), None)
        if first is None:
            raise DataError(f"{shown}: no rows (the file holds only blank lines); give a file with at least one row") from None
        try:
            json.loads(first)
        except json.JSONDecodeError:  # not JSON lines: the document's own error
            raise DataError(f"{shown}:{document_error.lineno}: not valid JSON ({document_error.msg}, column "
                            f"{document_error.colno}); fix the file (a .jsonl file holds one JSON object a line)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{shown}:{number}: not valid JSON ({error.msg}, column {error.colno}); "
                            "each line of a JSON-lines file must be one complete JSON object") from None
        if not isinstance(value, dict):
            raise DataError(f"{shown}:{number}: a JSON-lines row must be an object {{\"column\": value, ...}} "
                            f"(got {type(value).__name__})")


def row_lines(path: Path, suffix: str, encoding: str) -> list[int] | None:
    """The 1-based line on which each row starts, as the builders read rows (blank lines skipped;
    a quoted CSV field may span lines); None for a file of another kind or one that cannot be read."""
    try:
        with open(path, newline="", encoding=encoding) as handle:
            if suffix == ".jsonl":
                return [number for number, line in enumerate(handle, start=1) if line.strip()]
            if suffix not in (".csv", ".tsv"):
                return None
            reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            starts, end = [], 0
            for row in reader:
                start, end = end + 1, reader.line_num
                if row:
                    starts.append(start)
            return starts[1:]  # the first row is the header
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
