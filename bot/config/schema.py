"""The configuration file's schema: pydantic models that reject unknown keys and wrong types, field by field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actions.hosts import RedstorSettings, StoragePlatformDbSettings

Transport = Literal["ntlm", "kerberos", "credssp", "certificate", "basic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackSettings(_Strict):
    channels: list[str] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    approver_groups: list[str] = Field(default_factory=list)
    destructive_approvals: int = Field(default=2, ge=1, le=5)
    initiator_may_approve_destructive: bool = False
    # Fewer than two approvers of a delete, or the initiator among them, only when this says so too.
    allow_weaker_delete_approval: bool = False
    remind_after_minutes: float = Field(default=10, gt=0)
    escalate_after_reminders: int = Field(default=3, ge=1)
    wait_nudge_minutes: float = Field(default=30, gt=0)
    post_interval_s: float = Field(default=1.0, ge=0)  # pacing of chat.postMessage per channel
    group_cache_s: float = Field(default=300, ge=0)
    allow_insecure: bool = False  # an http:// SLACK_API_URL on a non-loopback address (warned at every start)

    @model_validator(mode="after")
    def _two_person_deletes(self) -> SlackSettings:
        weaker = self.destructive_approvals < 2 or self.initiator_may_approve_destructive
        if weaker and not self.allow_weaker_delete_approval:
            raise ValueError(
                "destructive_approvals below 2 or initiator_may_approve_destructive: true weakens the "
                "two-person rule for deletes; also set allow_weaker_delete_approval: true to accept that"
            )
        return self


class WinRMDefaults(_Strict):
    transport: Transport = "ntlm"
    username_env: str = "FAILOVER_WINRM_USER"
    password_env: str = "FAILOVER_WINRM_PASSWORD"
    cert_pem: str | None = None  # transport: certificate
    cert_key_pem: str | None = None
    server_cert_validation: Literal["validate", "ignore"] = "validate"
    ca_trust_path: str | None = None
    message_encryption: Literal["auto", "always", "never"] = "auto"
    operation_timeout_s: int = Field(default=20, ge=1)
    read_timeout_s: int = Field(default=30, ge=2)
    command_timeout_s: int = Field(default=120, ge=1)


class WinRMOverride(_Strict):
    url: str
    transport: Transport | None = None
    username_env: str | None = None
    password_env: str | None = None
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    server_cert_validation: Literal["validate", "ignore"] | None = None
    ca_trust_path: str | None = None
    message_encryption: Literal["auto", "always", "never"] | None = None
    operation_timeout_s: int | None = Field(default=None, ge=1)
    read_timeout_s: int | None = Field(default=None, ge=2)
    command_timeout_s: int | None = Field(default=None, ge=1)
    allow_insecure: bool = False  # this host only: accept the transport_risks() below (warned at every start)


class AuditSettings(_Strict):
    """The audit log's MAC keys: ``keys`` maps a key id to the environment variable holding that key;
    new events are sealed with ``key_id``. Old ids stay listed so that chains sealed with them stay checkable."""

    key_id: str | None = Field(default=None, min_length=1, max_length=32)
    keys: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _current_key_listed(self) -> AuditSettings:
        if self.key_id is not None and self.key_id not in self.keys:
            raise ValueError(f"key_id {self.key_id!r} is not one of keys ({', '.join(self.keys) or 'none'})")
        if self.keys and self.key_id is None:
            raise ValueError("keys are listed but key_id (the key new events are sealed with) is not set")
        return self


class ReadinessSettings(_Strict):
    """Scheduled read-only readiness rounds between runs (spec v3 §5)."""

    interval_s: int = Field(default=900, ge=0)  # 0 turns the rounds off
    repeat_hours: float = Field(default=24, gt=0)  # an unchanged problem is announced again at most this often
    channel: str | None = None  # default: the first of slack.channels

    @field_validator("interval_s")
    @classmethod
    def _at_least_five(cls, value: int) -> int:
        if 0 < value < 5:
            raise ValueError("must be 0 (off) or at least 5 seconds")
        return value


class HostModel(_Strict):
    name: str = Field(min_length=1)
    address: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    winrm: str | WinRMOverride
    agent_dns_name: str | None = None


class StorageHostModel(HostModel):
    mirror: str | None = None


class SiteDbModel(_Strict):
    """A site's own StoragePlatform database (v3): only where its connection string is."""

    odbc_env: str = Field(min_length=1)


class SiteModel(_Strict):
    partner: str
    account_server: HostModel
    storage_platform_db: SiteDbModel | None = None  # default: the top-level storage_platform_db.odbc_env
    storage_servers: list[StorageHostModel] = Field(default_factory=list)


class ConfigModel(_Strict):
    platform: str = Field(min_length=1)
    primary_site: str
    slack: SlackSettings = Field(default_factory=SlackSettings)
    winrm: WinRMDefaults = Field(default_factory=WinRMDefaults)
    redstor: RedstorSettings = Field(default_factory=RedstorSettings)
    storage_platform_db: StoragePlatformDbSettings = Field(default_factory=StoragePlatformDbSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    sites: dict[str, SiteModel]

    @field_validator("sites")
    @classmethod
    def _two_sites(cls, sites: dict[str, SiteModel]) -> dict[str, SiteModel]:
        if len(sites) < 2:
            raise ValueError("needs at least two sites (a site and its partner)")
        return sites
