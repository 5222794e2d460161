"""`slimformer predict BUNDLE --input FILE --out FILE`: a file scored in chunks, resumable, bad rows kept apart.

Input: .txt (one text per line), .csv/.tsv, .jsonl or .parquet with a text column, read as a stream. Every row
is either scored (a line of --out: row number, text, and the task's answer: label and score for a classifier, the
vector for an embedding model) or rejected (a line of the rejects file: row number, reason, value): an empty or
missing text, a text that is not a string, a JSON line that does not parse. None is dropped silently. Vectors go to
.jsonl (a list per line) or .parquet (a list column, written from the finished JSON lines).

Resumable: output goes to `OUT.partial` (and `REJECTS.partial`); after each chunk both are flushed to disk and
a checkpoint `OUT.partial.json` records the rows done and both files' lengths, written atomically. A killed run
started again truncates the partial files to the checkpoint (dropping a half-written chunk) and continues after
its last row: nothing lost, nothing twice. At the end the partial files are renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import output_error, write_json
from ..errors import DataError, OutputError

FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
OUT_FORMATS = (".jsonl", ".csv", ".parquet")
MISSING = object()


@dataclass(frozen=True)
class Scored:
    row: int
    text: str
    answer: dict  # the task's fields: {"label", "score"} or {"embedding"}

    def record(self) -> dict:
        return {"row": self.row, "text": self.text, **self.answer}


def _classification(predictor, texts: list[str], batch_size: int) -> list[dict]:
    from ..metrics import log_softmax

    probs = np.exp(log_softmax(predictor.answers(texts, batch_size)))
    return [{"label": predictor.labels[int(p.argmax())], "score": round(float(p.max()), 6)} for p in probs]


def _embedding(predictor, texts: list[str], batch_size: int) -> list[dict]:
    return [{"embedding": v} for v in predictor.predict(texts, batch_size)]


# task -> (the answer fields per text, the CSV columns after row and text; None: no CSV, vectors are lists)
def _ner(predictor, texts: list[str], batch_size: int) -> list[dict]:
    from ..ner import text_entities

    return [{"entities": found} for i in range(0, len(texts), batch_size)
            for found in text_entities(predictor, texts[i:i + batch_size])]


ANSWERS: dict[str, tuple[Callable, tuple[str, ...] | None]] = {
    "classification": (_classification, ("label", "score")),
    "embedding": (_embedding, None),
    "ner": (_ner, None),
}


def answer_fields(predictor, texts: list[str], batch_size: int) -> list[dict]:
    """Per text, the fields of the task's answer a predictions file holds."""
    from ..errors import ModelError

    if predictor.task.name not in ANSWERS:
        raise ModelError(f"predict does not write {predictor.task.name} answers yet (tasks: {', '.join(ANSWERS)})")
    return ANSWERS[predictor.task.name][0](predictor, texts, batch_size)


def input_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: input must be .txt, .csv, .tsv, .jsonl or .parquet")
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    return fmt


def reject_reason(value: Any) -> str | None:
    """Why a row's text cannot be scored, or None when it can."""
    if value is MISSING or value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is {type(value).__name__}, not a string"
    if not value.strip():
        return "empty text"
    return None


def parse_json_line(line: str, column: str) -> Any:
    """A JSON line's text field: its value, MISSING, or a ValueError for a line that is no JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg}") from None
    if not isinstance(record, dict):
        raise ValueError("JSON line is not an object")
    return record.get(column, MISSING)


def iter_values(path: Path, column: str, fmt: str) -> Iterator[tuple[Any, str | None]]:
    """(text value, reason it is unreadable or None) per row, streamed; row numbers are positions in this stream.

    .txt: every line is a row (an empty one is rejected); .jsonl: every non-blank line; CSV/Parquet: every record."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            file = pq.ParquetFile(path)
            if column not in file.schema_arrow.names:
                raise DataError(f"{path} has no column '{column}' (columns: {', '.join(file.schema_arrow.names)}); "
                                "pass --text-column")
            for batch in file.iter_batches(batch_size=4096, columns=[column]):
                for value in batch.column(0).to_pylist():
                    yield value, None
            return
        with open(path, encoding="utf-8-sig", newline="" if fmt in ("csv", "tsv") else None) as f:
            if fmt == "txt":
                for line in f:
                    yield line.rstrip("\r\n"), None
            elif fmt == "jsonl":
                for line in f:
                    if line.strip():
                        try:
                            yield parse_json_line(line, column), None
                        except ValueError as e:
                            yield line.rstrip("\r\n"), str(e)
            else:
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
                if reader.fieldnames is None or column not in reader.fieldnames:
                    raise DataError(f"{path} has no column '{column}' (columns: {', '.join(reader.fieldnames or [])}"
                                    "); pass --text-column")
                for record in reader:
                    yield record.get(column, MISSING), None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise DataError(f"{path} is not valid CSV: {e}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:
        if type(e).__module__.startswith("pyarrow"):
            raise DataError(f"{path} is not a valid Parquet file: {e}") from None
        raise


def count_rows(path: Path, fmt: str) -> int | None:
    """Rows for the progress bar: Parquet's metadata, else a fast count of lines (approximate for CSV with line
    breaks inside quotes)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return max(lines - (fmt in ("csv", "tsv")), 0)


def json_value(value: Any) -> Any:
    if value is MISSING:
        return None
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class Output:
    """Predictions (.jsonl or .csv) and rejects (.jsonl), each appended to its `.partial` file, with a checkpoint."""

    def __init__(self, out: Path, rejects: Path, identity: dict, overwrite: bool = False,
                 task: str = "classification"):
        if out.suffix.lower() not in OUT_FORMATS:
            raise OutputError(f"--out must be .jsonl, .csv or .parquet, got {out.name}")
        self.csv_columns = ANSWERS.get(task, (None, None))[1]
        if out.suffix.lower() == ".csv" and self.csv_columns is None:
            raise OutputError(f"the answers of this {task} model are lists (vectors, entities): write them to "
                              f".jsonl or .parquet, not {out.name}")
        self.out, self.rejects, self.identity = out, rejects, identity
        self.csv = out.suffix.lower() == ".csv"
        self.parquet = out.suffix.lower() == ".parquet"  # JSON lines while running, converted at the end
        self.parts = {"out": out.with_name(out.name + ".partial"),
                      "rejects": rejects.with_name(rejects.name + ".partial")}
        self.state_path = out.with_name(out.name + ".partial.json")
        self.state = {"rows_done": 0, "scored": 0, "rejected": 0, "bytes": {"out": 0, "rejects": 0}}
        if self.state_path.is_file():
            saved = json.loads(self.state_path.read_text())
            if saved.get("identity") != identity:
                raise OutputError(f"{self.state_path} is the checkpoint of another job (other input, model or text "
                                  "column); delete it and the .partial files, or choose another --out")
            self.state = saved["progress"]
            for key, path in self.parts.items():
                if not path.is_file() or path.stat().st_size < self.state["bytes"][key]:
                    raise OutputError(f"{path} is missing or shorter than its checkpoint {self.state_path} says; "
                                      "delete the checkpoint to start again")
        elif out.exists() and not overwrite:
            raise OutputError(f"{out} exists already; choose another --out or pass --overwrite")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            rejects.parent.mkdir(parents=True, exist_ok=True)
            self.files = {}
            for key, path in self.parts.items():
                f = open(path, "ab" if path.exists() else "wb")
                f.truncate(self.state["bytes"][key])  # drop what was written after the last checkpoint
                f.seek(self.state["bytes"][key])
                self.files[key] = f
        except OSError as e:
            raise output_error(str(out), e) from None
        if self.csv and self.state["bytes"]["out"] == 0:
            self._write("out", self._csv_line(["row", "text", *self.csv_columns]))

    @property
    def resumed_at(self) -> int:
        return self.state["rows_done"]

    @staticmethod
    def _csv_line(values: list) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        return buffer.getvalue()

    def _write(self, key: str, text: str) -> None:
        data = text.encode("utf-8")
        try:
            self.files[key].write(data)
        except OSError as e:
            raise output_error(str(self.parts[key]), e) from None
        self.state["bytes"][key] += len(data)

    def add(self, scored: list[Scored], rejected: list[dict], rows: int) -> None:
        """One chunk: its predictions and rejects, then the checkpoint that makes them count."""
        if self.csv:
            text = "".join(self._csv_line([s.row, s.text, *(s.answer[c] for c in self.csv_columns)]) for s in scored)
        else:
            text = "".join(json.dumps(s.record(), ensure_ascii=False) + "\n" for s in scored)
        self._write("out", text)
        self._write("rejects", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
        try:
            for f in self.files.values():
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise output_error(str(self.out), e) from None
        self.state["rows_done"] += rows
        self.state["scored"] += len(scored)
        self.state["rejected"] += len(rejected)
        write_json(self.state_path, {"identity": self.identity, "progress": self.state})

    def finish(self) -> dict:
        for f in self.files.values():
            f.close()
        if self.parquet:
            _jsonl_to_parquet(self.parts["out"], self.out)
            self.parts["out"].unlink()
        else:
            os.replace(self.parts["out"], self.out)
        os.replace(self.parts["rejects"], self.rejects)
        self.state_path.unlink()
        return dict(self.state)


def _jsonl_to_parquet(source: Path, out: Path) -> None:
    """The finished JSON lines as a Parquet file (vectors as a list<float> column), written atomically."""
    import pyarrow as pa
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    try:
        table = pajson.read_json(source) if source.stat().st_size else pa.table({"row": pa.array([], pa.int64())})
        if "embedding" in table.column_names:
            index = table.column_names.index("embedding")
            table = table.set_column(index, "embedding", table["embedding"].cast(pa.list_(pa.float32())))
        tmp = out.with_name(out.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise output_error(str(out), e) from None


def identity(input_path: Path, model: str, column: str) -> dict:
    """What a checkpoint belongs to: the input file as it was, the model, the column."""
    stat = input_path.stat()
    return {"input": str(input_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "model": str(Path(model).resolve()), "text_column": column}


Row = tuple[int, Any, str | None]  # row number, text value, why it is unreadable (or None)


def chunks(values: Iterator[tuple[Any, str | None]], size: int, skip: int) -> Iterator[list[Row]]:
    """Rows (row number, value, unreadable reason) in chunks of `size`, after the first `skip` rows."""
    chunk = []
    for row, (value, error) in enumerate(values):
        if row < skip:
            continue
        chunk.append((row, value, error))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def split_chunk(chunk: list[Row]) -> tuple[list[tuple[int, str]], list[dict]]:
    """(rows to score, reject records)."""
    good, rejected = [], []
    for row, value, error in chunk:
        reason = error or reject_reason(value)
        if reason:
            rejected.append({"row": row, "reason": reason, "value": json_value(value)})
        else:
            good.append((row, value))
    return good, rejected


def score_rows(rows: list[tuple[int, str]], predictor, batch_size: int) -> list[Scored]:
    if not rows:
        return []
    fields = answer_fields(predictor, [t for _, t in rows], batch_size)
    return [Scored(row, text, f) for (row, text), f in zip(rows, fields, strict=True)]


def predict_file(model: str, input_path: Path, out: Path | None, rejects: Path | None = None,
                 text_column: str = "text", batch_size: int = 32, chunk_size: int = 1024, threads: int = 1,
                 overwrite: bool = False, write_stdout: Callable[[str], None] | None = None) -> dict:
    """Score a file on this machine (see the module docstring). Returns {rows_done, scored, rejected, ...}."""
    from ..progress import progress_bar
    from ..runtimes import load_predictor

    fmt = input_format(input_path)
    predictor = load_predictor(model, threads=threads)
    values = iter_values(input_path, text_column, fmt)
    if out is None:  # stdout: JSON lines, rejects to their file if given; no checkpoint
        total = {"rows_done": 0, "scored": 0, "rejected": 0}
        rejected_lines = []
        for chunk in chunks(values, chunk_size, 0):
            good, rejected = split_chunk(chunk)
            scored = score_rows(good, predictor, batch_size)
            write_stdout("".join(json.dumps(s.record(), ensure_ascii=False) + "\n" for s in scored))
            rejected_lines += [json.dumps(r, ensure_ascii=False) + "\n" for r in rejected]
            total = {"rows_done": total["rows_done"] + len(chunk), "scored": total["scored"] + len(scored),
                     "rejected": total["rejected"] + len(rejected)}
        if rejects is not None:
            from ..cache import write_text

            write_text(rejects, "".join(rejected_lines))
        return total | {"rejects_lines": rejected_lines if rejects is None else None}
    rejects = rejects or out.with_name(out.stem + ".rejects.jsonl")
    output = Output(out, rejects, identity(input_path, model, text_column), overwrite, predictor.task.name)
    skip = output.resumed_at
    with progress_bar(f"scoring {input_path.name}", count_rows(input_path, fmt)) as update:
        update(advance=skip)
        for chunk in chunks(values, chunk_size, skip):
            good, rejected = split_chunk(chunk)
            output.add(score_rows(good, predictor, batch_size), rejected, len(chunk))
            update(advance=len(chunk))
    return output.finish() | {"resumed_at": skip, "out": str(out), "rejects": str(rejects)}
