"""`slimformer predict BUNDLE --input FILE --out FILE --engine ray`: the same job on Ray Data.

The file is read by Ray Data (Parquet and CSV natively, the text column as strings; .txt and .jsonl as lines
parsed by the same rules as the local run), scored by `map_batches` on an actor pool
(`ActorPoolStrategy`), each actor loading the bundle once with `num_cpus` equal to its model threads, and
streamed back in order to this process, which writes the output, the rejects and the checkpoints exactly as
the local run does (scale/predict.py): the same files, row for row. A resumed run skips writing the rows it
had written (Ray scores them again: the input is re-read from its start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .predict import (
    MISSING,
    Output,
    Scored,
    answer_fields,
    count_rows,
    identity,
    input_format,
    json_value,
    parse_json_line,
    reject_reason,
)

VALUE = "value"


class Scorer:
    """A Ray Data actor: the bundle loaded once; each batch of raw values comes back scored or rejected."""

    def __init__(self, model: str, threads: int, fmt: str, column: str, batch_size: int):
        from ..runtimes import load_predictor

        self.predictor = load_predictor(model, threads=threads)
        self.fmt, self.column, self.batch_size = fmt, column, batch_size

    def _value(self, raw: Any) -> tuple[Any, str | None]:
        if self.fmt != "jsonl":
            return raw, None
        try:
            return parse_json_line(raw, self.column), None
        except ValueError as e:
            return raw, str(e)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import json

        values = [self._value(v) for v in batch[VALUE].tolist()]
        reasons = [error or reject_reason(value) for value, error in values]
        good = [i for i, r in enumerate(reasons) if r is None]
        answers = [""] * len(values)  # the task's answer fields per text, as JSON (a label and score, a vector)
        if good:
            fields = answer_fields(self.predictor, [values[i][0] for i in good], self.batch_size)
            for i, f in zip(good, fields, strict=True):
                answers[i] = json.dumps(f)
        return {"text": [v if r is None else "" for (v, _), r in zip(values, reasons, strict=True)],
                "answer": answers, "reason": [r or "" for r in reasons],
                "value": [json.dumps(json_value(None if v is MISSING else v)) if r else "" for (v, _), r
                          in zip(values, reasons, strict=True)]}


def read_dataset(path: Path, fmt: str, column: str):
    """A Ray dataset with one column, VALUE: the text as read (or the raw line for .jsonl)."""
    import pyarrow as pa
    import ray.data
    from pyarrow import csv as pacsv

    from ..errors import DataError

    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = pq.ParquetFile(path).schema_arrow.names
        if column not in names:
            raise DataError(f"{path} has no column '{column}' (columns: {', '.join(names)}); pass --text-column")
        ds = ray.data.read_parquet(str(path), columns=[column])
    elif fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig") as f:
            header = next(iter(__import__("csv").reader(f, delimiter="\t" if fmt == "tsv" else ",")), [])
        if column not in header:
            raise DataError(f"{path} has no column '{column}' (columns: {', '.join(header)}); pass --text-column")
        ds = ray.data.read_csv(str(path), parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","),
                               convert_options=pacsv.ConvertOptions(column_types={column: pa.string()},
                                                                    include_columns=[column]))
    else:
        ds = ray.data.read_text(str(path), encoding="utf-8-sig", drop_empty_lines=fmt == "jsonl")
        column = "text"
    return ds.rename_columns({column: VALUE}) if column != VALUE else ds


def predict_file_ray(model: str, input_path: Path, out: Path, rejects: Path | None = None, text_column: str = "text",
                     batch_size: int = 32, threads: int = 1, actors: int = 2, address: str | None = None,
                     overwrite: bool = False) -> dict:
    """Score a file on Ray Data; the output files are those the local run writes."""
    import json

    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from ..progress import progress_bar

    fmt = input_format(input_path)
    rejects = rejects or out.with_name(out.stem + ".rejects.jsonl")
    from ..artifacts import open_artifact

    output = Output(out, rejects, identity(input_path, model, text_column), overwrite, open_artifact(model).task.name)
    skip = output.resumed_at
    if not ray.is_initialized():
        # locally: a CPU for every actor's threads plus one for the read tasks, or the actors starve the reads
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": actors * threads + 1}))
    DataContext.get_current().execution_options.preserve_order = True  # rows come back in file order
    ds = read_dataset(input_path, fmt, text_column)
    scored = ds.map_batches(Scorer, fn_constructor_args=(str(Path(model).resolve()), threads, fmt, text_column,
                                                         batch_size),
                            batch_size=max(batch_size, 256), compute=ActorPoolStrategy(size=actors), num_cpus=threads,
                            batch_format="numpy")
    row = 0
    with progress_bar(f"scoring {input_path.name} on Ray", count_rows(input_path, fmt)) as update:
        for batch in scored.iter_batches(batch_size=1024, batch_format="numpy"):
            good, bad = [], []
            n = len(batch["answer"])
            for i in range(n):
                if row + i < skip:
                    continue
                if batch["reason"][i]:
                    bad.append({"row": row + i, "reason": str(batch["reason"][i]),
                                "value": json.loads(batch["value"][i])})
                else:
                    good.append(Scored(row + i, str(batch["text"][i]), json.loads(batch["answer"][i])))
            if row + n > skip:
                output.add(good, bad, row + n - max(row, skip))
            row += n
            update(advance=n)
    return output.finish() | {"resumed_at": skip, "out": str(out), "rejects": str(rejects), "engine": "ray"}
