"""The HTTP JSON server over an ``Engine`` (Starlette + uvicorn).

- ``GET /health`` -> ``{"status": "ok", "run": ..., "domains": {name: n_items}}``
- ``POST /recommend`` ``{"domain", "history": [id | {"text": ...}, ...], "k": 10, "exclude_seen": bool}``
  -> ``{"domain", "mode", "items": [{"item", "score", "text"}, ...]}``, best first
- ``POST /items`` ``{"domain", "items": [{"item", "text"}, ...]}`` -> ``{"domain", "added", "replaced", "items"}``

Every request that cannot be answered gets a 4xx JSON ``{"error": "<field>: <problem>", "field": ...}``
(400 bad JSON, 401 token, 404 unknown domain / item / path, 405 method, 409 not possible for this
run, 413 body too large, 422 a value out of range); the server keeps serving. Starlette and not
FastAPI: every field is checked by hand to name it in the error, so FastAPI's models would add a
dependency and nothing else.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from crossrec_cli.serving.engine import Engine, RequestError

SETTINGS_ENV = "CROSSREC_SERVE_SETTINGS"  # the settings of each worker process (workers > 1)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    body_bytes: int = 1 << 20
    k: int = 1000
    history: int = 1000
    items: int = 1000
    text_chars: int = 10000
    id_chars: int = 200


@dataclass(frozen=True)
class ServeSettings:
    """Everything a server process needs: the export ``folder``, the ``domains`` to serve (None:
    all), the shared-secret ``token`` (None: no authorisation), onnxruntime ``threads``, the
    ``encoder`` precision, the top-k ``index`` kind and its options, ``exclude_seen``'s default,
    the request ``limits`` and how many worker processes serve (``workers``)."""

    folder: str
    domains: list[str] | None = None
    token: str | None = None
    threads: int = 1
    encoder: str = "float32"
    index: str = "exact"
    index_options: dict[str, Any] = field(default_factory=dict)
    exclude_seen: bool = True
    limits: Limits = Limits()
    workers: int = 1

    def engine(self) -> Engine:
        from pathlib import Path

        from crossrec_cli.evaluation.index import build_index

        return Engine(Path(self.folder), self.domains, self.threads,
                      lambda vecs: build_index(vecs, self.index, **self.index_options), self.encoder)


# -- request fields -----------------------------------------------------------------------------------
def _keys(obj: dict, allowed: tuple[str, ...], where: str = "") -> None:
    for key in obj:
        if key not in allowed:
            raise RequestError(f"{where}{key}", f"unknown field; expected {', '.join(allowed)}")


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise RequestError(name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(name, "empty text")
    if len(value) > limit:
        raise RequestError(name, f"{len(value)} characters, at most {limit}", 413)
    return value


def _item_id(value: Any, name: str, limit: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # {"history": [50]} means item "50"
    return _text(value, name, limit)


def _list(obj: dict, key: str, limit: int) -> list:
    if key not in obj:
        raise RequestError(key, "required")
    value = obj[key]
    if not isinstance(value, list):
        raise RequestError(key, f"expected a list, got {type(value).__name__}")
    if not value:
        raise RequestError(key, "empty list; give at least one entry")
    if len(value) > limit:
        raise RequestError(key, f"{len(value)} entries, at most {limit}", 413)
    return value


def domain_of(obj: dict, limits: Limits) -> str:
    if "domain" not in obj:
        raise RequestError("domain", "required")
    return _text(obj["domain"], "domain", limits.id_chars)


def recommend_request(obj: dict, limits: Limits, exclude_default: bool) -> tuple[str, list, int, bool]:
    """(domain, history, k, exclude_seen) of a ``POST /recommend`` body."""
    _keys(obj, ("domain", "history", "k", "exclude_seen"))
    domain = domain_of(obj, limits)
    history: list[str | dict] = []
    for n, entry in enumerate(_list(obj, "history", limits.history)):
        if isinstance(entry, dict):
            _keys(entry, ("text",), f"history[{n}].")
            if "text" not in entry:
                raise RequestError(f"history[{n}].text", "required in a {\"text\": ...} entry")
            history.append({"text": _text(entry["text"], f"history[{n}].text", limits.text_chars)})
        else:
            history.append(_item_id(entry, f"history[{n}]", limits.id_chars))
    k = obj.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.k:
        raise RequestError("k", f"expected an integer from 1 to {limits.k}, got {json.dumps(k)}")
    exclude = obj.get("exclude_seen", exclude_default)
    if not isinstance(exclude, bool):
        raise RequestError("exclude_seen", f"expected true or false, got {json.dumps(exclude)}")
    return domain, history, k, exclude


def items_request(obj: dict, limits: Limits) -> tuple[str, list[tuple[str, str]]]:
    """(domain, [(id, text), ...]) of a ``POST /items`` body; an id given twice is an error."""
    _keys(obj, ("domain", "items"))
    domain = domain_of(obj, limits)
    out, seen = [], set()
    for n, entry in enumerate(_list(obj, "items", limits.items)):
        if not isinstance(entry, dict):
            raise RequestError(f"items[{n}]", f"expected an object {{\"item\": ..., \"text\": ...}}, got {type(entry).__name__}")
        _keys(entry, ("item", "text"), f"items[{n}].")
        for key in ("item", "text"):
            if key not in entry:
                raise RequestError(f"items[{n}].{key}", "required")
        item = _item_id(entry["item"], f"items[{n}].item", limits.id_chars)
        if item in seen:
            raise RequestError(f"items[{n}].item", f"{item!r} is given twice in this request")
        seen.add(item)
        out.append((item, _text(entry["text"], f"items[{n}].text", limits.text_chars)))
    return domain, out


# -- the app ----------------------------------------------------------------------------------------
def build_app(settings: ServeSettings, engine: Engine | None = None) -> Any:
    """The Starlette application serving ``engine`` (built from ``settings`` when not given)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    engine = engine or settings.engine()
    limits = settings.limits

    def error(field_name: str, problem: str, status: int) -> JSONResponse:
        return JSONResponse({"error": f"{field_name}: {problem}", "field": field_name}, status_code=status)

    def authorize(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise RequestError("authorization", "missing or wrong token; send the header 'Authorization: Bearer <token>'",
                               401)

    async def body(request: Request) -> dict:
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > limits.body_bytes):
            raise RequestError("body", f"{size} bytes, at most {limits.body_bytes}", 413)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limits.body_bytes:
                raise RequestError("body", f"more than {limits.body_bytes} bytes", 413)
        try:
            obj = json.loads(bytes(data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError("body", f"not valid JSON ({str(exc).splitlines()[0][:120]})", 400) from None
        if not isinstance(obj, dict):
            raise RequestError("body", f"expected a JSON object, got {type(obj).__name__}")
        return obj

    async def health(request: Request) -> JSONResponse:
        authorize(request)
        return JSONResponse(engine.health())

    async def recommend(request: Request) -> JSONResponse:
        authorize(request)
        domain, history, k, exclude = recommend_request(await body(request), limits, settings.exclude_seen)
        return JSONResponse(await run_in_threadpool(engine.recommend, domain, history, k, exclude))

    async def items(request: Request) -> JSONResponse:
        authorize(request)
        domain, new = items_request(await body(request), limits)
        if settings.workers > 1:
            raise RequestError("items", f"{settings.workers} worker processes serve, each with its own catalogue: an "
                               "item added to one would be missing from the others; serve with workers=1 to add items", 409)
        return JSONResponse(await run_in_threadpool(engine.add_items, domain, new))

    async def on_request_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return error(exc.field, exc.problem, exc.status)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        where = "method" if exc.status_code == 405 else "path"
        return error(where, f"{request.method} {request.url.path}: {exc.detail}", exc.status_code)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        return error("server", f"internal error ({type(exc).__name__}); the request was not applied", 500)

    routes = [Route("/health", health, methods=["GET"]), Route("/recommend", recommend, methods=["POST"]),
              Route("/items", items, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={RequestError: on_request_error, HTTPException: on_http,
                                                        Exception: on_crash})


def app_from_env() -> Any:
    """The app of one of several worker processes (uvicorn's factory): settings from the environment."""
    raw = json.loads(os.environ[SETTINGS_ENV])
    raw["limits"] = Limits(**raw["limits"])
    return build_app(ServeSettings(**raw))


def serve(settings: ServeSettings, host: str, port: int, engine: Engine | None = None) -> None:
    """Serve until stopped (Ctrl-C / SIGTERM): one process with ``engine``, or ``settings.workers``
    processes, each loading the export itself."""
    import uvicorn

    if settings.workers == 1:
        uvicorn.run(build_app(settings, engine), host=host, port=port, log_level="warning", access_log=False)
        return
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("crossrec_cli.serving.server:app_from_env", factory=True, host=host, port=port,
                workers=settings.workers, log_level="warning", access_log=False)
