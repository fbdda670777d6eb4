"""The audit log's action vocabulary, in one place (docs/audit-events.md says what each
records and who its actor is).

Every app names its events with these members (a StrEnum is a str, so
`audit.record(AuditAction.KEY_CREATE, ...)` stores "key.create"): a second spelling of
the same action in another module is the drift that makes an auditor's query miss
events. Actions are `<entity>.<verb>`, lower case. Engineers A, C and D add theirs here
(per-request inference events, GDPR requests, retention runs and settings).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AuditAction"]


class AuditAction(StrEnum):
    # Signing in (tenants/auth.py: the lockout backend, HTTP Basic and the admin's form).
    LOGIN_SUCCESS = "login.success"
    LOGIN_FAILURE = "login.failure"
    LOGIN_LOCKOUT = "login.lockout"  # the attempt that locked a username or an address

    # Tenants' API keys (operator keys are keys with the operator scope: data.operator).
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    KEY_ROTATE = "key.rotate"

    # Members, roles and invitations.
    MEMBER_ADD = "member.add"
    MEMBER_ROLE = "member.role"
    MEMBER_REMOVE = "member.remove"
    INVITATION_CREATE = "invitation.create"
    INVITATION_ACCEPT = "invitation.accept"
    INVITATION_WITHDRAW = "invitation.withdraw"

    # Plans, limits and tenants (also when Stripe drives them).
    PLAN_SET = "plan.set"  # a plan created or edited (CLI, API)
    PRICE_SET = "price.set"  # a price book entry created or changed (the console)
    TENANT_CREATE = "tenant.create"
    TENANT_PLAN = "tenant.plan"
    TENANT_OVERRIDES = "tenant.overrides"  # single limits of a tenant's plan replaced
    TENANT_SUSPEND = "tenant.suspend"
    TENANT_REACTIVATE = "tenant.reactivate"
    TENANT_RESIDENCY = "tenant.residency"  # data region or jurisdiction changed
    TENANT_PROMPT_RETENTION = "tenant.prompt_retention"  # whether prompts may be kept
    TENANT_BILLING_EMAIL = "tenant.billing_email"  # where invoices go (its subject, sealed)
    TENANT_PAST_DUE = "tenant.past_due"  # a failed payment (Stripe); suspension follows

    # Operators and their permission areas.
    OPERATOR_CREATE = "operator.create"
    OPERATOR_GRANT = "operator.grant"
    OPERATOR_REVOKE = "operator.revoke"

    # Operators' edits in the Django admin (the console), of any audited model: which
    # model, which object, which fields (never the values: they may be personal).
    ADMIN_ADD = "admin.add"
    ADMIN_CHANGE = "admin.change"
    ADMIN_DELETE = "admin.delete"

    # The Rhai scheduler script.
    SCHEDULER_STORE = "scheduler.store"  # stored through the management API
    SCHEDULER_RELOAD = "scheduler.reload"  # `rbee scheduler reload FILE`

    # Models on hives.
    MODEL_ADD = "model.add"  # assigned to a hive's device
    MODEL_REMOVE = "model.remove"
    MODEL_PIN = "model.pin"
    MODEL_UNPIN = "model.unpin"
    MODEL_APPROVE = "model.approve"
    MODEL_WITHDRAW = "model.withdraw"  # an approval taken back
    MODEL_ALIAS = "model.alias"
    MODEL_UNALIAS = "model.unalias"
    MODEL_DOWNLOAD = "model.download"
    WORKER_COMMAND = "worker.command"  # start / stop / restart one worker

    # Hives.
    HIVE_TOKEN = "hive.token"  # noqa: S105 (an action name): a hive created or given a new token
    HIVE_REVOKE = "hive.revoke"
    HIVE_TRUST = "hive.trust"  # trust_models switched (data.trust_models)
    HIVE_REGION = "hive.region"  # the operator's region of the hive changed
    HIVE_DISABLE = "hive.disable"
    HIVE_ENABLE = "hive.enable"
    HIVE_CONNECT = "hive.connect"
    HIVE_REFUSED = "hive.refused"  # a connection refused: bad token, disabled, bad hello
    HIVE_DISCONNECT = "hive.disconnect"

    # Data-subject requests (gdpr/services.py).
    GDPR_REQUEST_EXPORT = "gdpr.request.export"
    GDPR_REQUEST_ERASE = "gdpr.request.erase"
    GDPR_REQUEST_EXTEND = "gdpr.request.extend"
    GDPR_REQUEST_RETRY = "gdpr.request.retry"  # an operator runs a request again (console)

    # Consent (gdpr/consent.py): "consent.grant", "consent.withdraw".
    CONSENT_GRANT = "consent.grant"
    CONSENT_WITHDRAW = "consent.withdraw"

    # Retention (gdpr/retention.py): the audit audits its own settings.
    RETENTION_SETTING = "retention.setting"
    RETENTION_HOLD_PLACE = "retention.hold.place"
    RETENTION_HOLD_RELEASE = "retention.hold.release"
    RETENTION_RUN = "retention.run"

    # The audit log itself (gdpr/audit.py, gdpr feed): inference metadata per request.
    INFERENCE = "inference"
