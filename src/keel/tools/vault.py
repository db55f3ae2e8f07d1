"""Secrets from HashiCorp Vault or OpenBao (same HTTP API), KV version 2, through ``hvac``.

Install with ``pip install 'keel[vault]'``. By default each secret name is a key of one KV secret
(``secret/keel``); ``paths`` maps a name to another ``path#key``. Values are cached for ``ttl``
seconds so a busy tool does not read Vault on every call. Error messages carry names and paths,
never the token or a value.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from keel.errors import MissingDependencyError, SecretNotFoundError

try:
    import hvac
    import hvac.exceptions
    import requests
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("hvac", "vault", feature="the Vault secret provider") from e

__all__ = ["VaultSecretProvider"]


class VaultSecretProvider:
    """A ``SecretProvider`` that reads KV v2 secrets from Vault or OpenBao.

    ``url`` and ``token`` default to ``VAULT_ADDR`` and ``VAULT_TOKEN``; pass ``client`` to use an
    ``hvac.Client`` you configured yourself (TLS, AppRole, Kubernetes auth).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        mount_point: str = "secret",
        path: str = "keel",
        paths: Mapping[str, str] | None = None,
        ttl: float = 60.0,
        timeout: float = 5.0,
        client: Any | None = None,
    ) -> None:
        if client is None:
            url = url or os.environ.get("VAULT_ADDR")
            if not url:
                raise SecretNotFoundError(
                    "no Vault address given", hint="pass url= or set VAULT_ADDR"
                )
            client = hvac.Client(
                url=url, token=token or os.environ.get("VAULT_TOKEN"), timeout=timeout
            )
        self.client = client
        self.mount_point = mount_point
        self.path = path
        self.paths = dict(paths or {})
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _where(self, name: str) -> tuple[str, str]:
        target = self.paths.get(name)
        if target is None:
            return self.path, name
        path, _, key = target.partition("#")
        return path, key or name

    def _read(self, path: str) -> dict[str, Any]:
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
        where = f"{self.mount_point}/{path}"
        try:
            response = self.client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount_point, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            raise SecretNotFoundError(f"no Vault secret at {where}") from None
        except hvac.exceptions.Forbidden:
            raise SecretNotFoundError(
                f"the Vault token may not read {where}",
                hint="grant the token's policy read on this path",
            ) from None
        except hvac.exceptions.VaultError as e:
            raise SecretNotFoundError(
                f"Vault refused to read {where}: {type(e).__name__}"
            ) from None
        except requests.RequestException as e:
            raise SecretNotFoundError(
                f"Vault is unreachable ({type(e).__name__})", hint="check VAULT_ADDR"
            ) from None
        data: dict[str, Any] = response["data"]["data"] or {}
        with self._lock:
            self._cache[path] = (time.monotonic(), data)
        return data

    def get(self, name: str) -> str:
        path, key = self._where(name)
        value = self._read(path).get(key)
        if not isinstance(value, str) or not value:
            raise SecretNotFoundError(
                f"secret {name!r} is not a key of the Vault secret {self.mount_point}/{path}",
                hint=f"write it with: bao kv put {self.mount_point}/{path} {key}=...",
            )
        return value
