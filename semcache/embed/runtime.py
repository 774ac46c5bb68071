"""ONNX Runtime sessions for the encoder and the verifier, exported from the shipped weights.

Nothing is downloaded: a model's ONNX file is exported with ``torch.onnx`` from the torch
weights it is derived from (the bundled all-MiniLM-L6-v2 package, the verifier artifact), once,
and cached in a models folder (``<data_dir>/models`` for ``semcache serve``). The file's name
carries a hash of the source weights and of the export recipe, so a changed model or recipe
exports again; a file is written to a temporary name and renamed into place, with a sidecar
holding its SHA-256, and a file that is missing its sidecar, does not match it or does not load
is exported again instead of failing the start. An export holds a lock file in the folder, so
processes starting together export once. A folder that cannot be written is no error: the
model is exported to a temporary file, loaded and the file removed (every start pays for it).

torch is imported only to export. With the files cached, the ONNX runtime loads without
torch or transformers: tokenisation is the model's ``tokenizer.json`` through ``tokenizers``.

Padding: a batch is padded to its longest sequence, so one long text among short ones would
make every row cost the long one. ``length_groups`` splits a batch into runs of similar lengths
where that saves more than the extra call costs (``FIXED_COST_TOKENS``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "FIXED_COST_TOKENS",
    "RUNTIMES",
    "OnnxModel",
    "default_models_dir",
    "default_threads",
    "export_module",
    "length_groups",
    "load_onnx",
    "model_files",
    "padded_feeds",
    "source_digest",
]

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "torch")
# What one extra forward call costs, in padded tokens of one row (a MiniLM call is about 3 ms
# plus 0.09 ms per padded token on the 2-core machine, less per token in larger batches).
# Splitting matters: one call per distinct length, or none, costs 1.3x to 3x more. The value
# less: 24 to 96 took 5 to 15% less encoder time than 8 on 16-prompt batches in most runs,
# too little to show end to end (64 against 8, servers alternated: the same throughput within
# noise). benchmarks/results/length_groups.md.
FIXED_COST_TOKENS = 48
_CHUNK = 1 << 20
# Export on the calling thread with this many torch threads at most (the export is short).
_EXPORT_THREADS = 2


def default_threads(runtime: str) -> int:
    """Intra-op threads when none are named: 1 on either runtime.

    On onnx, with the int8 graphs and the slow fusions split (``fusion``), one thread a call
    was measured against two on the 2-core machine, both servers up, the side-by-side workload
    (``benchmarks/results/hot_path_profile.md``): 1.06x the reworded throughput at c=16, 1.07x
    for new prompts, a lower c=1 p50 (7.2 against 8.1 ms) and 15-25% less CPU a lookup. A
    39-token call is too small to split across cores without the hand-off costing more than
    it saves, and at c=16 the encoder's and the verifier's calls already run side by side on
    the two cores. (With fp32 graphs and the fused layer norms, 2 threads had been faster.)
    torch's OpenMP threads stall each other when other work shares the cores (one encode
    went from 8 ms to ~490 ms), so torch keeps 1 too. ``runtime`` stays a parameter: the
    best count is a property of the runtime, measured per runtime.
    """
    return 1


def default_models_dir() -> Path:
    """Where ONNX files go when the caller names no folder: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "semcache" / "models"


# Folders and files of a model folder that are not what an ONNX graph is exported from.
_NOT_SOURCE_DIRS = frozenset({"onnx", "openvino", ".git"})
_NOT_SOURCE_SUFFIXES = frozenset({".onnx", ".md", ".lock"})


def model_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of a model folder's files, sorted, but for other exports
    (``onnx/``, ``openvino/``, ``*.onnx``), read-mes and git files."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or _NOT_SOURCE_DIRS.intersection(rel.parts[:-1]):
            continue
        if path.suffix in _NOT_SOURCE_SUFFIXES or path.name.startswith(".git"):
            continue
        files.append((rel.as_posix(), path))
    return files


def source_digest(recipe: str, files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over the export recipe's name and each (label, file)'s label and bytes."""
    digest = hashlib.sha256(recipe.encode())
    for label, path in files:
        digest.update(b"\0" + label.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def length_groups(lengths: Sequence[int], fixed: int = FIXED_COST_TOKENS) -> list[list[int]]:
    """Indices of ``lengths`` split into batches of similar length, each padded to its longest.

    Minimises the sum over batches of ``fixed + rows * longest`` (padded tokens plus the cost of
    one more call), exactly, by dynamic programming over the sorted lengths; the input order is
    kept inside each batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    if n <= 1:
        return [order] if order else []
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + fixed + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(sorted(order[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def padded_feeds(encodings: list[Any], pad_id: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` of ``tokenizers`` encodings,
    right-padded to the longest, as int64 arrays."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        types[row, :n] = e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def export_module(
    module: Any,
    path: Path,
    inputs: Sequence[str],
    output: str,
    dynamic_output: Sequence[int],
    transformer: Any = None,
) -> None:
    """``torch.onnx.export`` of ``module(*inputs)`` (int64 ``(batch, seq)`` tensors) to
    ``path``, batch and sequence dynamic; ``output``'s ``dynamic_output`` axes are dynamic.
    ``transformer``, the BERT model inside ``module``, is exported with eager attention and
    its graph fused into ONNX Runtime's transformer kernels (``fusion``)."""
    import torch

    from .fusion import eager_attention, fuse_bert

    if transformer is not None:
        eager_attention(transformer)

    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, _EXPORT_THREADS))
    try:
        example = torch.ones((2, 8), dtype=torch.long)
        args = tuple(example if name != "token_type_ids" else example * 0 for name in inputs)
        names = {0: "batch", 1: "sequence"}
        axes: dict[str, dict[int, str]] = {name: dict(names) for name in inputs}
        axes[output] = {axis: names[axis] for axis in dynamic_output}
        import warnings

        with warnings.catch_warnings(), torch.inference_mode():
            # The tracer warns about Python conditions on shapes in transformers' code; the
            # exported graph is checked against torch in tests/test_onnx_runtime.py.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(inputs),
                output_names=[output],
                dynamic_axes=axes,
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        torch.set_num_threads(threads)
    if transformer is not None:
        fuse_bert(path, transformer.config)


class OnnxModel:
    """One ONNX Runtime session on the CPU. ``run`` is thread-safe (ONNX Runtime's is)."""

    def __init__(self, model: bytes, threads: int | None, source: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: on 2 shared cores a spinning pool takes
        # the core another process (or the other model) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.source = source
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_shape = list(self._session.get_outputs()[0].shape)

    def run(self, feeds: dict[str, Any]) -> Any:
        """The first output for ``feeds`` (name -> int64 array)."""
        return self._session.run(None, {k: feeds[k] for k in self.input_names})[0]


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    import fcntl

    with open(folder / f".{name}.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_checked(path: Path) -> bytes | None:
    """The file's bytes when its sidecar names their SHA-256, else None."""
    try:
        data = path.read_bytes()
        want = path.with_suffix(".sha256").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return data if hashlib.sha256(data).hexdigest() == want else None


def _load(data: bytes, threads: int | None, path: Path) -> OnnxModel | None:
    try:
        return OnnxModel(data, threads, str(path))
    except Exception as exc:  # onnxruntime raises its own types for a file it cannot parse
        log.warning("cached ONNX file %s does not load (%s); exporting it again", path, exc)
        return None


def _export_to(folder: Path, stem: str, export: Callable[[Path], None]) -> tuple[Path, bytes]:
    """Export into ``folder`` atomically: temporary name, fsync, sidecar, rename."""
    final = folder / f"{stem}.onnx"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export(tmp)
        data = tmp.read_bytes()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp's file is private (0600), and an export that writes into it in place
        # (the int8 quantiser does) would keep that: other users of the folder must read it.
        os.chmod(tmp, 0o644)
        sidecar = folder / f".{stem}.sha256.tmp"
        sidecar.write_text(hashlib.sha256(data).hexdigest() + "\n", encoding="ascii")
        os.replace(tmp, final)
        os.replace(sidecar, final.with_suffix(".sha256"))
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return final, data


def _remove_stale(folder: Path, name: str, keep: str) -> None:
    """Files of ``name`` exported from other weights or recipes, and temporary files left by
    an export that was killed (the caller holds the lock: no export of ``name`` is running)."""
    for old in [*folder.glob(f"{name}-*"), *folder.glob(f".{name}-*.tmp")]:
        if old.suffix == ".tmp" or (old.suffix in (".onnx", ".sha256") and old.stem != keep):
            with contextlib.suppress(OSError):
                old.unlink()
                log.info("removed %s", old)


def load_onnx(
    folder: Path,
    name: str,
    digest: str,
    export: Callable[[Path], None],
    threads: int | None,
) -> OnnxModel:
    """The cached ONNX model ``name`` for ``digest``, exported first when it is not there (or
    does not check or load). Raises ``ConfigError`` when the export itself fails."""
    stem = f"{name}-{digest[:20]}"
    path = folder / f"{stem}.onnx"
    data = _read_checked(path)
    if data is not None and (model := _load(data, threads, path)) is not None:
        return model
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder, name):
            # Another process may have exported it while this one waited for the lock.
            data = _read_checked(path)
            if data is not None and (model := _load(data, threads, path)) is not None:
                return model
            started = time.perf_counter()
            path, data = _export_to(folder, stem, _checked_export(export, name))
            _remove_stale(folder, name, stem)
            log.info("exported %s to %s in %.1f s", name, path, time.perf_counter() - started)
    except OSError as exc:
        log.warning(
            "cannot cache the ONNX export of %s in %s (%s); exporting to a temporary file, "
            "which every start repeats",
            name,
            folder,
            exc,
        )
        with tempfile.TemporaryDirectory(prefix="semcache-onnx-") as tmp:
            path, data = _export_to(Path(tmp), stem, _checked_export(export, name))
    return OnnxModel(data, threads, str(path))


def _checked_export(export: Callable[[Path], None], name: str) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        try:
            export(path)
        except OSError:
            raise
        except Exception as exc:  # torch.onnx raises many types; the start must say why
            raise ConfigError(f"cannot export {name} to ONNX: {exc}") from exc

    return run
