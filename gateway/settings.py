"""Runtime configuration, read once from the environment (prefix ``GATEWAY_``).

Everything the gateway needs to know about its surroundings lives here so that a
bad value stops the process at start with a message naming the variable, rather
than surfacing later as a 500 on some request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path("./data")
# The operator token opens every account: shorter than this, it is guessable.
MIN_ADMIN_TOKEN_LENGTH = 32


class Settings(BaseSettings):
    """Validated settings; build with ``Settings()`` (environment) or keyword arguments (tests)."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL callers use to reach the gateway; tenant URLs are built from it.",
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Directory for the embedded SQLite database; created on first start.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means a SQLite file in the data directory.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Operator bearer token for /api/v1, at least 32 characters; unset, "
        "empty or blank disables the admin API.",
    )
    console_idle_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        description="An admin console session unused this many minutes ends; signing in "
        "again starts a new one.",
    )
    console_session_hours: int = Field(
        default=12,
        ge=1,
        le=7 * 24,
        description="An admin console session ends this many hours after sign-in, however busy.",
    )
    console_oidc_tenant: str | None = Field(
        default=None,
        pattern="^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
        description="Sign-in to the admin console with Microsoft Entra: the directory "
        "(tenant) id of the app registration; unset, only the operator token signs in.",
    )
    console_oidc_client_id: str | None = Field(
        default=None,
        pattern="^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$",
        description="The app registration's application (client) id.",
    )
    console_oidc_client_secret: SecretStr | None = Field(
        default=None, description="The app registration's client secret."
    )
    console_oidc_allowed: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Comma-separated: who may sign in with Entra, by UPN or email, object "
        "id, or the object id of a group the ID token names in its groups claim.",
    )
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Fernet keys encrypting stored secrets, newest first.",
    )
    auth_failure_burst: int = Field(
        default=10,
        ge=0,
        le=1_000_000,
        description="Wrong tokens one client may present in a row (per surface; SCIM and "
        "CM.com per tenant URL or channel) before it must wait; 0 turns the limit off.",
    )
    auth_failure_seconds: float = Field(
        default=6.0,
        gt=0,
        le=3600,
        description="Once a client is held back, it may present one more token every this "
        "many seconds.",
    )
    scim_rate_limit_per_second: float = Field(
        default=0.0,
        ge=0.0,
        description="Sustained SCIM requests per second per account; 0 disables the limit.",
    )
    scim_rate_limit_burst: int = Field(
        default=200, ge=1, description="Requests an account may send at once above the rate."
    )
    scim_max_page_size: int = Field(
        default=200, ge=1, le=10_000, description="Largest SCIM page a list request returns."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted, in bytes."
    )
    log_level: str = Field(default="INFO", description="Python log level name.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite commit durability: FULL survives power loss before a request is "
        "acknowledged; NORMAL only a crash of the process, and is faster.",
    )
    database_pool_size: int = Field(
        default=5, ge=1, description="Database connections (and their threads) per process."
    )
    database_lock_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a write waits for the database's write lock (SQLite) or a row "
        "lock (PostgreSQL) before it is answered 503 with Retry-After.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Server processes accepting on the one port."
    )
    keepalive_seconds: int = Field(
        default=75,
        gt=0,
        le=3600,
        description="Seconds an idle HTTP connection is kept open. Above the idle timeout "
        "of the load balancers in front (60 s for most): a server that closes first races "
        "the balancer's next request on that connection, which then fails with a 502.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="After SIGTERM, seconds /readyz answers 503 while requests are still "
        "served: Kubernetes keeps routing to a terminating pod for a few seconds.",
    )
    shutdown_seconds: int = Field(
        default=20,
        gt=0,
        le=600,
        description="After the drain, seconds requests in flight and claimed outbox jobs "
        "are given to finish; jobs still running are then given back to other replicas.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Migrate the database when serve starts. Off where a separate step "
        "migrates (the Helm chart's Job): serve then refuses a schema it cannot use.",
    )
    twilio_api_url: str = Field(
        default="https://api.twilio.com",
        description="Base URL of Twilio's REST API (the gateway adds /2010-04-01/...).",
    )
    twilio_content_url: str = Field(
        default="https://content.twilio.com",
        description="Base URL of Twilio's Content API, where WhatsApp templates and their "
        "approval are read (the gateway adds /v1/ContentAndApprovals).",
    )
    cm_api_url: str = Field(
        default="https://gw.messaging.cm.com",
        description="Base URL of CM.com's messaging gateway (the gateway adds /v1.0/message).",
    )
    graph_api_url: str = Field(
        default="https://graph.microsoft.com",
        description="Base URL of Microsoft Graph (the gateway adds /v1.0/...).",
    )
    login_url: str = Field(
        default="https://login.microsoftonline.com",
        description="Base URL of the Microsoft identity platform (the gateway adds "
        "/{tenant}/oauth2/v2.0/... and reads the signing keys from there).",
    )
    o365_client_id: str | None = Field(
        default=None,
        description="Client id of the gateway's own multi-tenant app registration, for "
        "Office 365 admin consent; unset, an account's Teams app is used.",
    )
    o365_client_secret: SecretStr | None = Field(
        default=None, description="Client secret of that app registration."
    )
    presence_resource_data: bool = Field(
        default=True,
        description="Presence subscriptions ask Graph for the new state in each notification "
        "(encrypted with the gateway's certificate); off, the state is read back after each "
        "notification.",
    )
    presence_upkeep_seconds: float = Field(
        default=120.0,
        ge=0.2,
        le=600,
        description="Longest wait between two upkeeps of a presence monitor (token refresh, "
        "subscription renewal); it also bounds how soon a revoked monitor shows.",
    )
    allow_private_endpoints: bool = Field(
        default=False,
        description="Also allow http:// and private or loopback addresses for CloudLink "
        "event endpoints (an on-premises CloudLink, tests, a demo).",
    )
    delivery_enabled: bool = Field(
        default=True,
        description="Run the outbox workers in this process (sending replies, delivering "
        "events); turn off for processes that should only serve requests.",
    )
    outbox_lease_seconds: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="How long a worker's claim on an outbox row holds; a process that dies "
        "loses its claims when their leases end.",
    )
    outbox_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="How often an idle outbox worker looks for work."
    )
    outbox_concurrency: int = Field(
        default=64, ge=1, le=1000, description="Outbox rows one process delivers at once."
    )
    send_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Attempts to send a reply before it is dead-lettered."
    )
    event_max_attempts: int = Field(
        default=8,
        ge=1,
        le=50,
        description="Attempts to deliver an event to an endpoint (about a day with the default "
        "schedule) before it is dead-lettered.",
    )
    outbox_retry_scale: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Multiplies every retry delay; below 1 only for tests and demos.",
    )
    media_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="The largest medium the gateway passes on, inbound (fetched from the "
        "provider) or outbound (a reply's media URL). WhatsApp's own caps: images 5 MB, "
        "audio and video 16 MB, documents 100 MB.",
    )
    media_link_seconds: int = Field(
        default=86400,
        ge=60,
        le=7 * 86400,
        description="How long the signed media links pushed in message.received events "
        "stay good (each delivery attempt signs anew).",
    )
    outbound_timeout: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="Seconds an outbound HTTP call (provider API, CloudLink endpoint) may take.",
    )

    @field_validator(
        "public_url",
        "twilio_api_url",
        "twilio_content_url",
        "cm_api_url",
        "graph_api_url",
        "login_url",
    )
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "must start with http:// or https://, e.g. https://gateway.example.com"
            )
        return value.rstrip("/")

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token_is_long(cls, value: object) -> object:
        # An env file line such as GATEWAY_ADMIN_TOKEN=${UNSET} sets the variable to "":
        # that must mean "no token", never "the empty token".
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        token = raw.strip()
        if not token:
            return None
        if len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (generate one with "
                "`openssl rand -hex 32`), or unset to disable the admin API"
            )
        return token

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "console_oidc_tenant", "console_oidc_client_id", "console_oidc_client_secret", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("console_oidc_allowed", mode="before")
    @classmethod
    def _split_allowed(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(part).strip().lower() for part in value if str(part).strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _console_oidc_whole(self) -> Settings:
        parts = {
            "GATEWAY_CONSOLE_OIDC_TENANT": self.console_oidc_tenant,
            "GATEWAY_CONSOLE_OIDC_CLIENT_ID": self.console_oidc_client_id,
            "GATEWAY_CONSOLE_OIDC_CLIENT_SECRET": self.console_oidc_client_secret,
        }
        missing = [name for name, value in parts.items() if value is None]
        if missing and len(missing) < len(parts):
            raise ValueError(
                "sign-in with Entra needs GATEWAY_CONSOLE_OIDC_TENANT, _CLIENT_ID and "
                f"_CLIENT_SECRET together; missing: {', '.join(missing)}"
            )
        if not missing and not self.console_oidc_allowed:
            raise ValueError(
                "GATEWAY_CONSOLE_OIDC_ALLOWED is empty: name the users (UPN or object id) or "
                "groups who may sign in to the console with Entra"
            )
        return self

    @property
    def console_oidc(self) -> bool:
        """Whether the console offers sign-in with Microsoft Entra."""
        return self.console_oidc_client_secret is not None

    @model_validator(mode="after")
    def _known_database(self) -> Settings:
        url = self.database_url
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "GATEWAY_DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        return self

    @property
    def embedded(self) -> bool:
        """Whether the database is a SQLite file (the embedded default) rather than a server."""
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_database_url(self) -> str:
        """The URL the engine connects to: the configured one, or the embedded SQLite file."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"
