"""Where records come from: every row of a data source, as (where, row dict), read in linear time.

A source is one of
    a JSON list or JSONL file      streamed (textio.iter_json_records); where = "file:LINE"
    a Parquet file, or a folder    read through ``datasets`` into its Arrow cache and memory-mapped;
      of Parquet shards            where = "shard.parquet:row N" (N counts from 0 in that file)
    a ``save_to_disk`` folder      ``datasets.load_from_disk`` (a DatasetDict: ``DIR:split``,
                                   default train); where = "DIR:row N"
    a hub id ``org/name[:split]``  ``datasets.load_dataset`` (needs the network; offline it fails
                                   with one line saying so)

Arrow rows are never decoded all at once: the text columns are read in batches of rows and an
image column yields :class:`ArrowImage` references that fetch one image's bytes when asked.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterator
from typing import Any

from stepgrpo_fast.textio import iter_json_records

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
_SPLITS = ("train", "validation", "val", "dev", "test")
_BATCH_ROWS = 1024


@dataclasses.dataclass
class Source:
    """An opened data source: ``rows()`` yields (where, row); ``columns`` is None for JSON (each
    row has its own keys); ``base_dir`` anchors relative image paths."""

    name: str
    kind: str  # "json" | "parquet" | "arrow" | "hub"
    base_dir: pathlib.Path
    columns: list[str] | None = None
    _path: pathlib.Path | None = None
    _dataset: Any = None
    _row_names: list[tuple[int, str]] | None = None  # (first global row, file name) per shard

    def __len__(self) -> int:
        return len(self._dataset) if self._dataset is not None else -1

    def where(self, row: int) -> str:
        label, first = self.name, 0
        for start, name in self._row_names or ():
            if row >= start:
                label, first = name, start
        return f"{label}:row {row - first}"

    def rows(self) -> Iterator[tuple[str, dict]]:
        if self._dataset is None:
            missing = f"data file {str(self._path)!r} does not exist"
            for line, _, raw in iter_json_records(self._path, missing=missing):
                yield f"{self._path}:{line}", raw
            return
        yield from self._arrow_rows()

    def _arrow_rows(self) -> Iterator[tuple[str, dict]]:
        import pyarrow.compute as pc

        table = self._dataset.data.table
        image_cols = [c for c in table.column_names if _is_image_type(table.schema.field(c).type)]
        text_cols = [c for c in table.column_names if c not in image_cols]
        counts = {}
        for col in image_cols:
            column = table.column(col)
            if _is_list(column.type):
                counts[col] = pc.fill_null(pc.list_value_length(column), 0).to_pylist()
            else:
                counts[col] = column.is_valid().to_pylist()
        row = 0
        for batch in table.select(text_cols).to_batches(max_chunksize=_BATCH_ROWS):
            for raw in batch.to_pylist():
                where = self.where(row)
                for col in image_cols:
                    refs = [ArrowImage(table, col, row, k, where, self.base_dir,
                                       listed=_is_list(table.column(col).type))
                            for k in range(int(counts[col][row]))]
                    listed = _is_list(table.column(col).type)
                    raw[col] = refs if listed else (refs[0] if refs else None)
                yield where, raw
                row += 1
        if not text_cols:  # a table of images only
            raise ValueError(f"{self.name}: no text columns (question, solution...)")


class ArrowImage:
    """One image of an Arrow table, fetched when asked (``image_source()`` -> bytes or a path)."""

    __slots__ = ("_table", "column", "row", "k", "where", "base_dir", "listed")

    def __init__(self, table, column: str, row: int, k: int, where: str,
                 base_dir: pathlib.Path, *, listed: bool) -> None:
        self._table, self.column, self.row, self.k = table, column, row, k
        self.where, self.base_dir, self.listed = where, base_dir, listed

    def image_source(self) -> Any:
        value = self._table.column(self.column)[self.row].as_py()
        entry = value[self.k] if self.listed else value
        if isinstance(entry, dict):
            data, path = entry.get("bytes"), entry.get("path")
            if data is not None:
                return data
            entry = path
        if isinstance(entry, str):
            path = pathlib.Path(entry).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        return entry

    def __str__(self) -> str:
        return f"{self.column}[{self.k}]" if self.listed else self.column

    def __repr__(self) -> str:
        return f"ArrowImage({self.where}, {self})"


def _is_list(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)


def _is_image_type(arrow_type) -> bool:
    """An HF Image column ({bytes, path} structs), a list of them, or raw binary."""
    import pyarrow as pa

    if _is_list(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return True
    return pa.types.is_struct(arrow_type) and {f.name for f in arrow_type} >= {"bytes", "path"}


def open_source(spec: str | pathlib.Path) -> Source:
    """The source ``spec`` names (see the module docstring); ValueError with one clear line when
    it names nothing readable."""
    text = str(spec)
    path = pathlib.Path(text).expanduser()
    split = None
    if not path.exists() and ":" in path.name:
        head, _, split = text.rpartition(":")
        if pathlib.Path(head).expanduser().exists():
            path = pathlib.Path(head).expanduser()
        else:
            split = None
    if path.is_dir():
        return _open_folder(path, split)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PAR1":
            return _open_parquet([path], path.parent, str(path))
        if path.suffix == ".arrow":
            from datasets import Dataset

            return _arrow_source(Dataset.from_file(str(path)), str(path), "arrow", path.parent)
        return Source(name=str(path), kind="json", base_dir=path.parent, _path=path)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _open_hub(text)
    raise ValueError(f"data {text!r} does not exist (a JSON / JSONL / Parquet file, a folder of "
                     "Parquet shards or of datasets' save_to_disk, or a hub id org/name[:split])")


def _open_folder(path: pathlib.Path, split: str | None) -> Source:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            name = split or ("train" if "train" in loaded else next(iter(loaded)))
            if name not in loaded:
                raise ValueError(f"{path}: no split {name!r} (splits: {sorted(loaded)})")
            loaded = loaded[name]
        return _arrow_source(loaded, str(path), "arrow", path)
    shards = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not shards:
        raise ValueError(f"{path}: a folder with neither Parquet files nor a datasets "
                         "save_to_disk layout (dataset_info.json / state.json)")
    by_split = {}
    for shard in shards:
        named = next((s for s in _SPLITS if shard.name.startswith(s) or shard.parent.name == s),
                     None)
        by_split.setdefault(named, []).append(shard)
    if split is not None:
        if split not in by_split:
            raise ValueError(f"{path}: no Parquet shards of split {split!r} "
                             f"(found: {sorted(str(s) for s in by_split)})")
        shards = by_split[split]
    elif len([s for s in by_split if s is not None]) > 1:
        shards = by_split.get("train") or shards
    return _open_parquet(shards, path, str(path))


def _open_parquet(files: list[pathlib.Path], base_dir: pathlib.Path, name: str) -> Source:
    import pyarrow.parquet as pq
    from datasets import load_dataset

    row_names, start = [], 0
    for f in files:
        try:
            rows = pq.read_metadata(f).num_rows
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a bad file
            raise ValueError(f"{f}: not a readable Parquet file ({err})") from err
        row_names.append((start, str(f)))
        start += rows
    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    source = _arrow_source(dataset, name, "parquet", base_dir)
    source._row_names = row_names
    return source


def _open_hub(spec: str) -> Source:
    from datasets import load_dataset

    repo, _, split = spec.partition(":")
    try:
        dataset = load_dataset(repo, split=split or "train")
    except Exception as err:  # offline: ConnectionError / OfflineModeIsEnabled / DatasetNotFound
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {spec!r} from the Hugging Face hub ({first}); download "
                         "it on a machine with the network (datasets.load_dataset(...)"
                         ".save_to_disk(DIR)) and pass DIR") from None
    return _arrow_source(dataset, spec, "hub", pathlib.Path.cwd())


def _arrow_source(dataset, name: str, kind: str, base_dir: pathlib.Path) -> Source:
    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    return Source(name=name, kind=kind, base_dir=base_dir, columns=list(dataset.column_names),
                  _dataset=dataset)
