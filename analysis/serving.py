"""The served model: the pyfunc that `mlflow models serve` answers for a registered study winner.

The model is a pyfunc wrapping a trial's checkpoint (checkpoint/model.pt), or its ONNX export (artifact ONNX_ARTIFACT:
the forward pass in ONNX Runtime, OnnxClassifier); predictions go through trainables.checkpoint.Classifier either
way, so both apply training's exact validation preprocessing and answer the same request with the same response.
analysis.publishing.models (and .onnx_model) logs and registers it (with requirements() and code_paths() from here);
analysis.scoring_server runs it behind the real `mlflow models serve`.

Request (JSON, POST /invocations; the image file's bytes base64-encoded; `params` optional, k defaults to 5):
    {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}, "params": {"k": 3}}
    {"dataframe_records": [{"image": "<base64>"}, ...]}   or   {"inputs": {"image": ["<base64>", ...]}}
Response: {"predictions": [{"classes": ["cubism", ...], "probabilities": [0.81, ...]}]}, most probable first.
A file that is not a decodable image -> HTTP 400 naming the row and the reason. Per request at most MAX_ROWS
images and k <= MAX_K (else 400), a body of at most MAX_REQUEST_BYTES sent with a Content-Length (else 413 / 411,
before the body is read); LIMIT_ENV's variables override the caps.

This module is what the logged model imports: it is copied into the model's code/ folder together with
the packages listed in CODE_PACKAGES, and must import nothing else of this project (no sweep/, no other
analysis/ module), so the model loads on a machine without this checkout.
"""

from __future__ import annotations

import ast
import base64
import binascii
import functools
import io
import json
import os
import shutil
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from trainables import checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "classifier"  # the logged model's name inside its run
DEFAULT_K = 5
# Abuse limits of the served model: an image over Pillow's decompression-bomb size is refused from its header, a
# request over a cap below gets a 4xx before its work is done, and an error never quotes the input. The request caps
# are defaults: the variables in LIMIT_ENV, set where the server runs (`mlflow models serve`'s environment), override
# them.
MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (1024^3 / 4 / 3)
# One request's body, bytes: 64 MiB (~700 base64 JPEGs of 64 KiB, or 64 phone photos of 0.7 MiB). Refused (413)
# from its Content-Length before any of it is read (MLflow reads it whole, then holds its JSON, base64 and DataFrame
# forms: several times its size; 10,000 rows in 9 MB took +90 MB); a body without a Content-Length (chunked) is
# refused (411) rather than read to find its end.
MAX_REQUEST_BYTES = 64 * 2**20
# Images per request: one forward batch (Classifier.logits runs 64 at a time). Every row is decoded (up to MAX_PIXELS
# each, one at a time) and kept at the cached side until the model runs, so rows, not bytes, bound a request's work:
# 64 MiB of tiny PNGs would be 100,000s of images. A larger request is refused (400) before any row is decoded.
MAX_ROWS = 64
# Classes per answer (params.k; k is cut to the number of classes anyway): an answer is at most
# MAX_ROWS x MAX_K (class, probability) pairs, ~0.3 MB of JSON, whatever the number of classes.
MAX_K = 100
LIMIT_ENV = {
    "request_mib": "ARTSWEEP_SERVE_MAX_REQUEST_MIB",
    "rows": "ARTSWEEP_SERVE_MAX_ROWS",
    "k": "ARTSWEEP_SERVE_MAX_K",
}
MAX_ERROR_CHARS = 1000  # MLflow's scoring server quotes a malformed body whole (50 MB in -> 368 MB out)
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image")]),
    outputs=Schema([ColSpec(Array(DataType.string), "classes"), ColSpec(Array(DataType.double), "probabilities")]),
    params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
)
# What the served model imports from this project: whole packages (trainables.checkpoint builds the model
# through search_spaces), plus this one module of analysis/ (the pickled ImageClassifier refers to
# analysis.serving.ImageClassifier).
CODE_PACKAGES = ("trainables", "search_spaces")
CODE_MODULES = {"analysis": ("__init__.py", "serving.py")}
ONNX_ARTIFACT = "onnx"  # the pyfunc artifact of an exported model: its .onnx file (analysis.publishing.onnx_model)
# The .onnx file's metadata_props key: JSON of what preprocessing and the answer need (classes, image_size,
# resize_policy, normalization, epoch), so the file alone serves without its checkpoint or its family's code.
ONNX_METADATA = "artsweep"
ONNX_RUNTIME = "onnxruntime"  # imported only when an exported model loads: a requirement of ONNX models alone


def _raw_bytes(value) -> bytes:
    """The image file's bytes from a cell of the `image` column.

    dataframe_split / dataframe_records requests arrive already base64-decoded (the signature's binary
    column); an `inputs` request reaches predict() still base64 text (MLflow casts it to bytes without
    decoding), and a str may come from a caller that skipped the signature. Real image files are never
    pure base64 text (their headers hold non-ASCII bytes), so strict base64 means "encoded"."""
    if isinstance(value, str):
        value = value.encode("ascii", "replace")
    value = bytes(value)
    try:
        return base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return value


def limit(name: str, default: int) -> int:
    """A request cap: LIMIT_ENV[name] from this process's environment (a whole number >= 1), else `default`."""
    raw = os.environ.get(LIMIT_ENV[name])
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{LIMIT_ENV[name]}={raw!r} must be a whole number >= 1 (unset: {default})")
    return value


def guard_scoring_server(max_bytes: int) -> None:
    """Guard MLflow's scoring server (mlflow.pyfunc.scoring_server, FastAPI under uvicorn): its /invocations route
    answers 413 for a Content-Length over `max_bytes` and 411 for a body without one, before reading a byte of it;
    every error message is cut to MAX_ERROR_CHARS, without the input MLflow quotes. Runs when the served model
    loads, in the server's process, which is before scoring_server.init() builds the app (mlflow's app.py loads the
    model first), so the route init() wraps in _async_catch_mlflow_exception gets the size check. Idempotent."""
    from mlflow.pyfunc import scoring_server as server

    if getattr(server.invocations, "artsweep_guard", False):
        return
    server.invocations = _without_quoted_input(server.invocations)
    server._async_catch_mlflow_exception = _size_checked(server._async_catch_mlflow_exception, max_bytes)


def _without_quoted_input(original):
    """MLflow's invocations() with its error messages cut (MLflow's own JSON error quotes the request, and a
    prediction error starts with the whole DataFrame: `Failed to predict data '...'. \nError: ...`)."""
    from mlflow.pyfunc import scoring_server as server

    def invocations(data, content_type, model, input_schema):
        try:
            response = original(data, content_type, model, input_schema)
        except MlflowException as e:
            message = e.message.rpartition("\nError: ")[2]  # the reason, without the data MLflow puts before it
            raise MlflowException(_cut(message), error_code=ErrorCode.Value(e.error_code)) from None
        if response.status >= 400 and len(response.response) > MAX_ERROR_CHARS:
            response = server.InvocationsResponse(_cut(response.response), response.status, "text/plain")
        return response

    invocations.artsweep_guard = True
    return invocations


def _size_checked(catch, max_bytes: int):
    """MLflow's decorator of the /invocations route (its MlflowException -> JSON error), run after a check of the
    request's headers: a body too large, or of unknown size, is refused before the route reads it."""

    def decorate(route):  # called by init(), in the server only: other processes never import FastAPI for it
        from fastapi.responses import Response

        caught = catch(route)

        @functools.wraps(route)  # FastAPI reads the route's signature (request: Request) through __wrapped__
        async def checked(request):
            refusal = body_refusal(request.headers, max_bytes)
            if refusal:
                status, message = refusal
                body = json.dumps({"error_code": "BAD_REQUEST", "message": message})
                return Response(body, status, media_type="application/json")
            return await caught(request)

        return checked

    return decorate


def body_refusal(headers, max_bytes: int) -> tuple[int, str] | None:
    """(HTTP status, message) refusing a request body from its headers alone, or None to read it."""
    length = headers.get("content-length")
    if length is None or "transfer-encoding" in headers:
        return 411, "send the request body with a Content-Length header (a chunked body is not read)"
    if int(length) > max_bytes:  # the HTTP parser (h11) admits only digits here
        return 413, (
            f"request body of {int(length) / 2**20:.1f} MiB is over the {max_bytes / 2**20:g} MiB limit; "
            f"send fewer or smaller images per request ({LIMIT_ENV['request_mib']} sets the limit)"
        )
    return None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else f"{text[:MAX_ERROR_CHARS]}... ({len(text)} characters, cut)"


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc around a checkpoint, or several (an ensemble: artifacts checkpoint_0, checkpoint_1, ...; their
    softmax outputs averaged), or an ONNX export (artifact ONNX_ARTIFACT): DataFrame `image` (file bytes) ->
    `classes`, `probabilities` (top k)."""

    def load_context(self, context):
        guard_scoring_server(limit("request_mib", MAX_REQUEST_BYTES // 2**20) * 2**20)
        self.max_rows, self.max_k = limit("rows", MAX_ROWS), limit("k", MAX_K)
        if ONNX_ARTIFACT in context.artifacts:  # an export: the same preprocessing, the forward pass in ONNX Runtime
            self.clf = OnnxClassifier.load(context.artifacts[ONNX_ARTIFACT])
            return
        members = [
            checkpoint.load(path) for key, path in sorted(context.artifacts.items()) if key.startswith("checkpoint")
        ]
        self.clf = members[0] if len(members) == 1 else checkpoint.Ensemble(members)

    def _check(self, model_input: pd.DataFrame, params: dict | None) -> int:
        """The request's k, after its k and rows are checked against the caps (MlflowException: a 400)."""
        k = int((params or {}).get("k", DEFAULT_K))
        if not 1 <= k <= self.max_k:
            raise MlflowException(
                f"params.k must be 1 to {self.max_k} ({LIMIT_ENV['k']} sets the limit), got {k}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        if len(model_input) > self.max_rows:
            raise MlflowException(
                f"{len(model_input)} images in one request, over the limit of {self.max_rows} "
                f"({LIMIT_ENV['rows']} sets it): send them in requests of at most {self.max_rows}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        if "image" not in model_input:
            raise MlflowException(
                "input needs an `image` column of image file bytes", error_code=INVALID_PARAMETER_VALUE
            )
        return k

    # pd.DataFrame hint: no type-hint schema (the explicit SIGNATURE rules); it only silences MLflow's advice
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from trainables.data.decode import BadImage

        k = self._check(model_input, params)
        fitted, bad = [], []
        for row, value in enumerate(model_input["image"]):
            try:  # decode every row first, so one error names all bad rows and nothing is computed for them
                # writable copy: torch warns on read-only arrays
                fitted.append(self.clf.fit(_raw_bytes(value), max_pixels=MAX_PIXELS).copy())
            except BadImage as e:
                bad.append(f"row {row}: {e}")
        if bad:  # INVALID_PARAMETER_VALUE: the scoring server answers 400, not 500
            raise MlflowException(f"not a usable image: {'; '.join(bad)}", error_code=INVALID_PARAMETER_VALUE)
        # fit() output is already at the cached side, where fitting again is the identity (Pillow's resize
        # returns a copy at the same size), so top_k on the arrays equals top_k on the bytes.
        top = self.clf.top_k(fitted, k)
        return pd.DataFrame(
            {"classes": [[c for c, _ in t] for t in top], "probabilities": [[p for _, p in t] for t in top]}
        )


class OnnxForward(torch.nn.Module):
    """An exported model's forward pass in ONNX Runtime as a module (what Classifier.logits calls): float
    [N, 3, S, S] -> logits [N, C], on the CPU, with `threads` threads (None: ONNX Runtime's default, one per
    physical core, as served)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime  # here, not at the top: a PyTorch model's environment need not have it

        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.detach().cpu().float().numpy()})[0])


class OnnxClassifier(checkpoint.Classifier):
    """A Classifier whose model is an exported graph in ONNX Runtime (OnnxForward): decoding and validation
    preprocessing are Classifier's own (PyTorch), and so are probabilities and top_k. It has no trial config (the
    graph is the model; `head`, which saliency maps read, does not exist): what preprocessing needs comes from
    the .onnx file's ONNX_METADATA."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path) -> OnnxClassifier:
        forward = OnnxForward(path)
        meta = json.loads(forward.session.get_modelmeta().custom_metadata_map[ONNX_METADATA])
        return cls(
            forward,
            list(meta["classes"]),
            int(meta["image_size"]),
            meta["resize_policy"],
            dict(meta["normalization"]),
            None,  # no trial config
            int(meta["epoch"]),
            dict(meta.get("metrics", {})),
        )


def example_image() -> bytes:
    """A small real JPEG (one of the built-in dataset's renders) as the logged input example."""
    import numpy as np

    from trainables.data.builtin_dataset import STYLES, render

    buf = io.BytesIO()
    render(next(iter(STYLES)), np.random.default_rng(0)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def requirements(onnx: bool = False) -> list[str]:
    """The model's pip_requirements, installed into its environment only with --env-manager virtualenv/uv/conda
    (`local` uses this one): every distribution providing a module the served code imports, pinned to the
    version installed here. Found by reading the code (imported_modules), so a new import cannot be left out.
    `onnx`: an exported model's, which also runs ONNX Runtime and needs `onnx` for its MLmodel's onnx flavour
    (mlflow.onnx.load_model); a PyTorch model's leave both out."""
    owners = _owners()
    imported = (imported_modules() | {"onnx"}) if onnx else (imported_modules() - {ONNX_RUNTIME})
    missing = sorted(imported - set(owners))
    if missing:
        raise LookupError(f"the served model imports {missing}, which no installed distribution provides")
    out = set()
    for dist in {d for name in imported for d in owners[name]}:
        # "2.15.0+cpu" -> "2.15.0": local version labels are not on PyPI
        out.add(f"{dist}=={importlib_metadata.version(dist).split('+')[0]}")
    return sorted(out, key=str.lower)


@functools.cache
def _owners() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it: a scan of every distribution's file list
    (about 0.9 s on a 2-core machine), once per process (a study logs its winner and its champion)."""
    return importlib_metadata.packages_distributions()


def imported_modules() -> set[str]:
    """Top-level names of the modules outside this project and the standard library that the served code
    imports: this module's imports, and those of every project module they reach, at any depth (imports inside
    functions and TYPE_CHECKING blocks included: a superset of what loading and predicting run). The project's
    own imports are absolute (`from trainables.data import augment`), which is what this follows."""
    project = {*CODE_PACKAGES, *CODE_MODULES}
    todo, seen, found = [Path(__file__).resolve()], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # `from m import x`: x may be a submodule
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in project:
                    todo.extend(_module_files(name))
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def _module_files(name: str) -> list[Path]:
    """The files Python runs to import project module `name` (a.b.c): a/__init__.py, a/b/__init__.py, then
    a/b/c.py or a/b/c/__init__.py; none for a name that is not a module (`from a.b import some_function`)."""
    parts = name.split(".")
    files = [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    return [f for f in (*files, ROOT.joinpath(*parts[:-1], f"{parts[-1]}.py")) if f.is_file()]


def code_paths(tmp: Path) -> list[str]:
    """Copies of the code the served model imports, without __pycache__: logged with the model (code/,
    put on sys.path when it loads) so `mlflow models serve` works from any cwd without this checkout."""
    tmp = Path(tmp)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in CODE_PACKAGES:
        shutil.copytree(ROOT / pkg, tmp / pkg, ignore=ignore)
    for pkg, files in CODE_MODULES.items():
        (tmp / pkg).mkdir()
        for f in files:
            shutil.copy2(ROOT / pkg / f, tmp / pkg / f)
    return [str(tmp / p) for p in (*CODE_PACKAGES, *CODE_MODULES)]
