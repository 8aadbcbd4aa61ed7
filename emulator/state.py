"""Everything one emulator process holds: storage, settings, faults, counters, signing and workers."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from emulator.ratelimit import RateLimiter, Stats
from emulator.settings import Faults, Settings
from emulator.store import ALL_SCOPES, DEFAULT_ACCOUNT, DEFAULT_DOMAINS, Store


def generate_key() -> str:
    """A key shaped like the ones copied from Connectif's UI: ``<keyId>:<keySecret>``."""
    return f"{secrets.token_hex(12)}:{secrets.token_urlsafe(24)}"


@dataclass
class Auth:
    """The caller of one API request."""

    key: str
    account_id: str
    scopes: list[str]
    domains: list[str]


class JobQueue(Protocol):
    """The background workers as the routes see them (:class:`emulator.workers.Workers`)."""

    def kick(self, table: str, account_id: str) -> None:
        """Process the account's queued jobs of ``table`` (``imports`` or ``exports``) if no worker does."""

    def resume(self) -> None:
        """Pick up jobs left queued by a previous run."""

    def stop(self) -> None:
        """Start no more jobs."""


class NoWorkers:
    """The job queue of a state that no app runs yet: a job queued now would never be processed."""

    def kick(self, table: str, account_id: str) -> None:
        raise RuntimeError("no background workers: run the state in emulator.app.create_app(state)")

    def resume(self) -> None:
        raise RuntimeError("no background workers: run the state in emulator.app.create_app(state)")

    def stop(self) -> None:
        pass


@dataclass
class EmulatorState:
    """Shared by the API routes, the admin routes and the background workers."""

    store: Store
    api_key: str
    default_domains: list[str]
    initial_settings: dict[str, Any] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    faults: Faults = field(default_factory=Faults)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    stats: Stats = field(default_factory=Stats)
    storm_until: float = 0.0
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    rng: random.Random = field(default_factory=random.Random)
    fault_lock: threading.Lock = field(default_factory=threading.Lock)
    temp_dir: Path | None = None
    workers: JobQueue = field(default_factory=NoWorkers)  # emulator.workers.Workers, set by create_app

    # --- seeding --------------------------------------------------------------------------------------------
    def seed_defaults(self) -> None:
        """The default account, holding the start-up key with every scope."""
        self.store.put_account(DEFAULT_ACCOUNT, "Default account", list(self.default_domains))
        self.store.put_key(self.api_key, DEFAULT_ACCOUNT, list(ALL_SCOPES))

    def reset(self, settings: dict[str, Any] | None = None) -> None:
        """Back to a fresh start: no data, start-up settings (plus ``settings``), no faults, zero counters."""
        self.store.wipe()
        self.seed_defaults()
        self.settings = Settings(**{**self.initial_settings, **(settings or {})})
        self.set_faults(Faults())
        self.limiter.reset()
        self.stats.reset()

    def set_faults(self, faults: Faults) -> None:
        with self.fault_lock:
            self.faults = faults
            self.rng = random.Random(faults.seed)
            self.storm_until = time.time() + faults.storm_seconds if faults.storm_seconds else 0.0

    def roll(self, share: float) -> bool:
        """One throw of the fault dice."""
        if share <= 0:
            return False
        with self.fault_lock:
            return self.rng.random() < share

    def take_import_failure(self) -> bool:
        """Whether the import that starts now must end in ``error``."""
        with self.fault_lock:
            if self.faults.fail_next_imports > 0:
                self.faults = self.faults.model_copy(update={"fail_next_imports": self.faults.fail_next_imports - 1})
                return True
            share = self.faults.import_error_rate
            return share > 0 and self.rng.random() < share

    # --- pre-signed URLs (exports, error reports): downloadable without the key, expiring -----------------
    def sign(self, kind: str, resource_id: str, expires: int) -> str:
        message = f"{kind}:{resource_id}:{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def presign(self, base_url: str, kind: str, resource_id: str, file_name: str) -> str:
        expires = int(time.time() + self.settings.presigned_url_ttl_s)
        signature = self.sign(kind, resource_id, expires)
        return f"{base_url.rstrip('/')}/_files/{kind}/{resource_id}/{file_name}?expires={expires}&signature={signature}"

    def check_signature(self, kind: str, resource_id: str, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.sign(kind, resource_id, expires), signature)

    def close(self) -> None:
        self.workers.stop()
        self.store.close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def create_state(
    *,
    api_key: str,
    state_file: Path | None = None,
    authorized_domains: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> EmulatorState:
    """Open (or create) the store and seed the default account; the start-up key always works."""
    temp_dir: Path | None = None
    if state_file is not None:
        files_dir = state_file.with_name(state_file.name + ".files")
    else:
        temp_dir = Path(tempfile.mkdtemp(prefix="connectif-emulator-"))
        files_dir = temp_dir
    store = Store(state_file, files_dir)
    initial = dict(settings or {})
    state = EmulatorState(
        store=store,
        api_key=api_key,
        default_domains=list(authorized_domains or DEFAULT_DOMAINS),
        initial_settings=initial,
        settings=Settings(**initial),
        temp_dir=temp_dir,
    )
    rows = store.query("SELECT value FROM meta WHERE key = 'secret'")
    if rows:
        state.secret = bytes.fromhex(str(rows[0][0]))
    else:
        with store.tx() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES ('secret', ?)", (state.secret.hex(),))
    if store.get_account(DEFAULT_ACCOUNT) is None:
        state.seed_defaults()
    else:
        store.put_key(api_key, DEFAULT_ACCOUNT, list(ALL_SCOPES))
        if authorized_domains:
            account = store.get_account(DEFAULT_ACCOUNT) or {}
            store.put_account(DEFAULT_ACCOUNT, account.get("name", "Default account"), list(authorized_domains))
    store.requeue_interrupted()
    return state
