"""``keel serve``: run the HTTP service, and manage its API keys (``keel serve keys ...``).

SIGTERM or Ctrl-C stops the service gracefully: running runs stop at their last checkpoint and
resume when the service starts again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.console import ConfigOption, DataDirOption, err, fail_cleanly, out
from keel.errors import MissingDependencyError, ServeError

if TYPE_CHECKING:
    from keel.config import KeelSettings

__all__ = ["app", "serve"]

app = typer.Typer(
    help="Run the Keel service (runs API, OpenAI-compatible chat) and manage its API keys.",
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys (each belongs to a tenant).")
app.add_typer(keys_app, name="keys")


def _settings(config: Path | None, data_dir: Path | None, **serve: Any) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    chosen = {k: v for k, v in serve.items() if v is not None}
    if chosen:
        overrides["serve"] = chosen
    return load_settings(overrides, config_file=config)


def serve(settings: KeelSettings) -> None:
    """Run the service until SIGTERM or Ctrl-C."""
    try:
        import uvicorn

        from keel.serve.app import create_app
    except ImportError as e:
        raise MissingDependencyError(
            e.name or "fastapi", "serve", feature="the Keel service"
        ) from None
    from keel.serve.service import Service

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("keel serve: %(message)s"))
    log = logging.getLogger("keel.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    service = Service.from_settings(settings)
    config = uvicorn.Config(
        create_app(service),
        host=settings.serve.host,
        port=settings.serve.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    auth = "API keys required" if settings.serve.auth else "NO authentication"
    err.print(
        f"keel serve: http://{settings.serve.host}:{settings.serve.port} ({auth}; agents: "
        f"{', '.join(service.agents.names())}; state in {service.where})",
        highlight=False,
    )
    server.run()


@app.callback(invoke_without_command=True)
@fail_cleanly
def main(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Serve without API keys (every caller is tenant 'default')."
        ),
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the service: keel serve [--host 127.0.0.1 --port 8000 --data-dir DIR]."""
    if ctx.invoked_subcommand is not None:
        return
    serve(_settings(config, data_dir, host=host, port=port, auth=False if no_auth else None))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@app.command("ingest")
@fail_cleanly
def ingest(
    path: Annotated[Path, typer.Argument(help="A file or folder of documents.")],
    tenant: Annotated[str, typer.Option(help="The tenant whose memory receives them.")],
    namespace: Annotated[
        str, typer.Option(help="The tenant's namespace ('docs' is the docs agent's).")
    ] = "docs",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Ingest documents into a tenant's memory namespace (incrementally, by content hash)."""
    from keel.serve.memory import TenantMemory
    from keel.stack import open_memory

    settings = _settings(config, data_dir)
    target = TenantMemory.namespace(tenant, namespace)
    memory = open_memory(settings)

    async def run() -> Any:
        try:
            return await memory.ingest(path, namespace=target)
        finally:
            await memory.close()

    report = _run(run())
    out.print(
        f"{tenant}/{namespace}: {report.files_added} added, {report.files_updated} updated, "
        f"{report.files_unchanged} unchanged, {report.files_removed} removed; "
        f"{report.chunks_embedded + report.chunks_cached} chunks",
        highlight=False,
    )


@keys_app.command("create")
@fail_cleanly
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from keel.serve.service import open_key_store

    store = open_key_store(_settings(config, data_dir))
    try:
        record, secret = _run(store.create(tenant, name))
    finally:
        _run(store.aclose())
    err.print(f"key {record.id} for tenant {record.tenant} (shown once; keep it secret):")
    typer.echo(secret)


@keys_app.command("list")
@fail_cleanly
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List keys: id, tenant, name, created, revoked (never the secrets)."""
    from datetime import UTC, datetime

    from keel.serve.service import open_key_store

    store = open_key_store(_settings(config, data_dir))
    try:
        keys = _run(store.list_keys(tenant))
    finally:
        _run(store.aclose())

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")

    for k in keys:
        revoked = f"revoked {when(k.revoked_at)}" if k.revoked_at else "active"
        out.print(
            f"{k.id}  {k.tenant}  {k.name or '-'}  created {when(k.created_at)}  {revoked}",
            highlight=False,
        )
    if not keys:
        err.print("no keys")


@keys_app.command("revoke")
@fail_cleanly
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (from keys list).")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from keel.serve.service import open_key_store

    store = open_key_store(_settings(config, data_dir))
    try:
        found = _run(store.revoke(key_id))
    finally:
        _run(store.aclose())
    if not found:
        raise ServeError(f"no key with id {key_id!r}", hint="see: keel serve keys list")
    out.print(f"revoked {key_id}")
