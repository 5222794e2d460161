"""The HTTP server: FastAPI on uvicorn, one dynamic batcher per worker process, limits and back-pressure.

`create_app(settings)` builds the ASGI app; the model loads on the model thread after the server starts
listening, so /healthz answers at once and /readyz only once the model is loaded and warmed up (the warm-up
batches also seed the batcher's cost model). Nothing here imports torch: an ONNX bundle is served with
ONNX Runtime and the tokenizer alone (a torch bundle imports it in its runtime).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import Batcher, BatchPolicy, PaddingSplitter, QueueFull
from .metrics import ServerMetrics

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines sit with its own
SETTINGS_ENV = "SLIMFORMER_SERVE_SETTINGS"  # how `--workers` processes receive their settings
WARMUP_WORD = "warm"


@dataclass(frozen=True)
class ServeSettings:
    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int | None = None  # per worker; None: the cores divided among the workers
    workers: int | None = None  # None: one per core (measured fastest on 2 cores: benchmarks/results/serve.md)
    max_batch: int = 32
    max_wait_ms: float | None = None  # set: a fixed batching window instead of the latency target
    target_p99_ms: float = 50.0
    max_queue: int = 512
    max_texts: int = 64
    max_chars: int = 2000
    max_body_bytes: int = 1_000_000
    timeout_s: float = 10.0
    api_key_file: str | None = None

    def policy(self) -> BatchPolicy:
        if self.max_wait_ms is not None:
            return BatchPolicy(self.max_batch, self.max_wait_ms / 1e3, None, self.max_queue)
        return BatchPolicy(self.max_batch, 0.0, self.target_p99_ms / 1e3, self.max_queue)

    def worker_count(self) -> int:
        from ..hardware import cores_available

        return self.workers or max(1, cores_available() // (self.threads or 1))

    def worker_threads(self) -> int:
        from ..hardware import cores_available

        return self.threads or max(1, cores_available() // self.worker_count())


def read_manifest(bundle: str | Path) -> dict:
    path = Path(bundle) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def batch_invariance(manifest: dict) -> dict | str:
    """The bundle's measured batch invariance (share of labels that change between batch 1 and padded batches),
    or "not measured"."""
    measured = ((manifest.get("bundle") or {}).get("metrics") or {}).get("batch_invariance")
    return measured if measured else "not measured"


def invariance_line(manifest: dict) -> str:
    from ..metrics import invariance_text

    measured = batch_invariance(manifest)
    if isinstance(measured, str):
        return "batch invariance: not measured for this bundle (answers may differ slightly with batch-mates)"
    flag = " (FLAGGED: answers depend on batch-mates; consider --max-batch 1)" if measured.get("flagged") else ""
    return f"batch invariance: {invariance_text(measured)} in padded batches, over {measured['n']} texts{flag}"


def bundle_task(bundle: str | Path) -> str:
    """The task of the bundle (or model directory) served: which endpoint answers."""
    from ..artifacts import open_artifact

    return open_artifact(bundle).task.name


# -- request and response bodies ----------------------------------------------------------------------------
def request_model(max_texts: int, max_chars: int, task: str = "classification") -> type[BaseModel]:
    """The request body with this server's limits in it: beyond them 422, and the spec says so."""
    text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=max_chars)]
    verb = ENDPOINTS[task].verb
    extra = {"probabilities": (StrictBool, Field(False, description="Also return every label's probability."))} \
        if task == "classification" else {}
    return create_model(
        f"{verb.capitalize()}Request", __config__=ConfigDict(extra="forbid"),
        texts=(list[text], Field(min_length=1, max_length=max_texts, description=f"1 to {max_texts} texts to "
                                 f"{verb}, each 1 to {max_chars} characters.")), **extra)


class Prediction(BaseModel):
    label: str
    score: float = Field(description="Probability of the label.")
    probabilities: dict[str, float] | None = None


class ClassifyResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per text, in order.")
    model: str


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="One vector per text, in order (pooled and normalised as "
                                          "the model's own configuration says).")
    dim: int
    model: str


class Entity(BaseModel):
    type: str = Field(description="The entity type (PER, ORG, LOC, MISC for CoNLL-2003).")
    text: str = Field(description="The text it covers: texts[i][start:end].")
    start: int = Field(description="Character offset of its first character.")
    end: int = Field(description="Character offset after its last character.")
    score: float = Field(description="Mean probability of the predicted tag over its words.")


class NerResponse(BaseModel):
    entities: list[list[Entity]] = Field(description="Per text, in order, its entities in order of appearance.")
    model: str


class Error(BaseModel):
    detail: str


def predictions(rows, labels: list[str], probabilities: bool) -> list[dict]:
    """The answer per text: its label and probability, and every label's when asked."""
    out = []
    for p in rows:
        best = int(p.argmax())
        prediction = {"label": labels[best], "score": float(p[best])}
        if probabilities:
            prediction["probabilities"] = {label: float(x) for label, x in zip(labels, p, strict=True)}
        out.append(prediction)
    return out


@dataclass(frozen=True)
class Endpoint:
    """How a task is served: its path, what the batcher hands back per text (`rows`: from the model's raw output
    of a batch) and the response body (`body`: from those rows)."""

    path: str
    verb: str
    response: type[BaseModel]
    summary: str
    rows: Callable[[np.ndarray], np.ndarray]
    body: Callable[[list, list[str], Any], dict]
    batch: Callable[[Any, list[str]], list] | None = None  # (predictor, texts) -> rows, for a per-token task


def _probabilities(logits: np.ndarray) -> np.ndarray:
    from ..metrics import log_softmax

    return np.exp(log_softmax(logits))


ENDPOINTS = {
    "classification": Endpoint(
        "/v1/classify", "classify", ClassifyResponse,
        "Classify texts: a label and its probability per text (every label's on request)", _probabilities,
        lambda rows, labels, body: {"predictions": predictions(rows, labels, body.probabilities)}),
    "embedding": Endpoint(
        "/v1/embed", "embed", EmbedResponse, "Embed texts: one vector per text", lambda vectors: vectors,
        lambda rows, labels, body: {"embeddings": [np.asarray(r, dtype=np.float32).tolist() for r in rows],
                                    "dim": int(len(rows[0])) if len(rows) else 0}),
    "ner": Endpoint(
        "/v1/ner", "tag", NerResponse, "Find named entities: per text its entities' type, text, character span "
        "and score", lambda rows: rows, lambda rows, labels, body: {"entities": list(rows)},
        batch=lambda predictor, texts: _ner_entities(predictor, texts)),
}


def _ner_entities(predictor, texts: list[str]) -> list:
    from ..ner import text_entities  # numpy and tokenizers only

    return text_entities(predictor, texts)
ANSWER_PATHS = tuple(e.path for e in ENDPOINTS.values())


def endpoint(task: str) -> Endpoint:
    from ..errors import ModelError

    if task not in ENDPOINTS:
        raise ModelError(f"a {task} model cannot be served yet (served tasks: {', '.join(ENDPOINTS)})")
    return ENDPOINTS[task]


def wrong_endpoint(path: str, task: str) -> str:
    """The one line a request to another task's endpoint gets (404)."""
    return f"this server's bundle is for {task}: it answers POST {ENDPOINTS[task].path}, not {path}"


def key_matches(given: str | None, key: bytes) -> bool:
    """Constant-time comparison of an API key."""
    return hmac.compare_digest((given or "").encode(), key)


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers=headers)


ERRORS = {
    401: {"model": Error, "description": "Missing or wrong API key (the server runs with --api-key-file)."},
    413: {"model": Error, "description": "Request body larger than the limit."},
    503: {"model": Error, "description": "Not ready yet, or the queue is full / the timeout cannot be met: "
          "retry after the Retry-After header's seconds."},
    504: {"model": Error, "description": "The answer did not come within the request timeout."},
}


class Gate:
    """Outermost ASGI layer: refuses request bodies over `limit` bytes (413), whether they declare a
    Content-Length or stream, and counts classify requests by status with their latency (every status,
    401 and 422 included, which never reach the route)."""

    def __init__(self, app, limit: int, metrics: ServerMetrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._limited(scope, receive, observed_send)
        finally:
            if scope["path"] in ANSWER_PATHS:
                self.metrics.requests.labels(str(status[0])).inc()
                self.metrics.latency.observe(time.perf_counter() - started)

    async def _limited(self, scope, receive, send):
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks, size, more = [], 0, not too_big
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            too_big = size > self.limit
            if too_big:
                break
        if too_big:
            return await _error(413, f"request body over the limit of {self.limit} bytes")(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


class Model:
    """The predictor, its batcher and its state, shared by the routes of one worker."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.manifest = read_manifest(settings.bundle)
        self.task = bundle_task(settings.bundle)
        self.endpoint = endpoint(self.task)
        self.metrics = ServerMetrics(settings.max_batch)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="slimformer-model")
        self.predictor = None
        self.batcher: Batcher | None = None
        self.state, self.error = "loading", None
        self.threads = settings.worker_threads()
        self.info_name = (self.manifest.get("bundle") or {}).get("variant") or Path(settings.bundle).name
        self.on_failed = None  # set by run_server: stop the server (it would never become ready)

    def _load(self) -> None:
        """On the model thread: load, then warm up every batch size the batcher may use."""
        from ..runtimes import load_predictor

        predictor = load_predictor(self.settings.bundle, threads=self.threads)
        self.splitter = PaddingSplitter(predictor.forward)
        rows = self.endpoint.rows

        def run_batch(texts: list[str]) -> np.ndarray:
            if self.endpoint.batch is not None:  # per-word answers: tokenized with word ids, one padded batch
                return self.endpoint.batch(predictor, texts)
            return rows(self.splitter(predictor.tokenize(texts)))

        self.run_batch = run_batch
        self.predictor = predictor
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, self.settings.max_batch} & set(range(1, self.settings.max_batch + 1)))
        self.warmup = []
        for n in sizes:
            for words in (3, 12, 40):  # several lengths: the splitter's cost model needs more than one shape
                batch = [" ".join([WARMUP_WORD] * words)] * n
                start = time.perf_counter()
                run_batch(batch)
                self.warmup.append((n, time.perf_counter() - start))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self._load)
        except Exception as e:  # a bundle that does not load: not ready, and say why
            from ..errors import first_line

            self.state, self.error = "failed", f"{type(e).__name__}: {first_line(e)}"
            log.error("model failed to load: %s", self.error)
            if self.on_failed:
                self.on_failed()
            return
        self.batcher = Batcher(self.run_batch, self.settings.policy(), self.executor, self.metrics.on_batch)
        for n, seconds in self.warmup[len(self.warmup) // 3:]:  # past the first, cold calls: seeds the cost model
            self.batcher.cost.add(n, seconds)
        self.batcher.start()
        self.state = "ready"
        log.info("ready: %s on %s, %d thread(s); %s", Path(self.settings.bundle).name, self.predictor.runtime,
                 self.threads, invariance_line(self.manifest))

    async def stop(self) -> None:
        self.state = "failed" if self.state == "failed" else "stopping"
        if self.batcher:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def info(self) -> dict[str, Any]:
        from ..hardware import cpu

        bundle = self.manifest.get("bundle") or {}
        s = self.settings
        return {
            "state": self.state, **({"error": self.error} if self.error else {}),
            "bundle": str(Path(s.bundle).resolve()), "variant": bundle.get("variant"), "task": self.task,
            "endpoint": self.endpoint.path,
            "runtime": self.predictor.runtime if self.predictor else bundle.get("runtime"),
            "labels": self.predictor.labels if self.predictor else self.manifest.get("labels"),
            "max_length": self.predictor.max_length if self.predictor else self.manifest.get("max_length"),
            "batch_invariance": batch_invariance(self.manifest),
            "bundle_metrics": {k: bundle.get("metrics", {}).get(k) for k in ("metric", "accuracy", "precision_at_10",
                                                                                "latency_ms_end_to_end")
                               if k in bundle.get("metrics", {})},
            "batching": s.policy().describe() | (
                {"cost_model": self.batcher.cost.to_dict(), "batch_cap": self.batcher.batch_cap(),
                 "forward_cost": self.splitter.cost.to_dict()}
                if self.batcher else {}),
            "limits": {"max_texts": s.max_texts, "max_chars": s.max_chars, "max_body_bytes": s.max_body_bytes,
                       "timeout_s": s.timeout_s, "max_queue": s.max_queue, "api_key": bool(s.api_key_file)},
            "workers": s.worker_count(), "threads_per_worker": self.threads, "pid": os.getpid(), "cpu": cpu(),
        }


BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: KEY")


def _api_key_check(key_file: str | None):
    """A dependency that lets a request through only with the key (constant-time compare), or None."""
    if not key_file:
        return None
    key = Path(key_file).read_text().strip().encode()

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
              api_key: Annotated[str | None, Depends(KEY_HEADER)]) -> None:
        if not key_matches(credentials.credentials if credentials else api_key, key):
            raise Unauthorized()

    return check


class Unauthorized(Exception):
    pass


def create_app(settings: ServeSettings) -> FastAPI:
    model = Model(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(model.start())
        yield
        loading.cancel()
        await model.stop()

    served = model.endpoint
    app = FastAPI(title=f"slimformer {model.task}", version="1", lifespan=lifespan,
                  description=f"{model.task.capitalize()} with a slimformer bundle ({served.path}), dynamically "
                  "batched. Limits are in the request schema and /v1/info. Errors have a JSON body "
                  "{\"detail\": ...}.")
    app.state.model = model
    check = _api_key_check(settings.api_key_file)
    protected = [Depends(check)] if check else []

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized):
        return _error(401, "missing or wrong API key: send Authorization: Bearer KEY (or X-API-Key: KEY)",
                      {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # a body that is not even text (not UTF-8): malformed JSON like any other
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"], "input": None,
                                             "msg": f"malformed request body: {exc.detail}"}]}, 422)
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def answer(body) -> Response:
        texts = body.texts
        batcher = model.batcher
        if batcher is None:
            return _error(503, f"model {model.state}" + (f": {model.error}" if model.error else ""),
                          {"Retry-After": "1"})
        if batcher.expected_wait_s(len(texts)) > settings.timeout_s:
            return _error(503, f"server overloaded: the queue would not be answered within {settings.timeout_s} s",
                          {"Retry-After": str(max(1, math.ceil(batcher.expected_wait_s())))})
        try:
            futures = batcher.submit(texts)
        except QueueFull as e:
            return _error(503, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))})
        model.metrics.queue_depth.set(batcher.depth())
        try:
            rows = await asyncio.wait_for(asyncio.gather(*futures), settings.timeout_s)
        except TimeoutError:
            return _error(504, f"no answer within the request timeout of {settings.timeout_s} s")
        finally:
            model.metrics.queue_depth.set(batcher.depth())
        return JSONResponse({**served.body(rows, model.predictor.labels, body), "model": model.info_name})

    answer.__annotations__ = {"body": request_model(settings.max_texts, settings.max_chars, model.task),
                              "return": Response}
    app.post(served.path, response_model=served.response, dependencies=protected, responses=ERRORS,
             summary=served.summary)(answer)

    def elsewhere(path: str):
        async def route() -> Response:
            return _error(404, wrong_endpoint(path, model.task))
        return route

    for path in ANSWER_PATHS:  # another task's endpoint: say which one answers
        if path != served.path:
            app.post(path, include_in_schema=False, dependencies=protected)(elsewhere(path))

    @app.get("/v1/info", dependencies=protected, responses={401: ERRORS[401]},
             summary="The bundle, its measured batch invariance, batching policy and cost model, limits")
    async def info() -> dict:
        return model.info()

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready once the model is loaded and warmed up",
             responses={503: {"model": Error, "description": "Loading, failed to load, or stopping."}})
    async def readyz() -> Response:
        if model.state == "ready":
            return JSONResponse({"status": "ready"})
        return _error(503, model.state + (f": {model.error}" if model.error else ""), {"Retry-After": "1"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        if model.batcher:
            model.metrics.queue_depth.set(model.batcher.depth())
        data, content_type = model.metrics.exposition()
        return Response(data, media_type=content_type)

    app.add_middleware(Gate, limit=settings.max_body_bytes, metrics=model.metrics)
    return app


def app_from_env() -> FastAPI:
    """The app factory a `--workers` process calls (settings come through the environment)."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def settings_env(settings: ServeSettings) -> str:
    return json.dumps(asdict(settings))
