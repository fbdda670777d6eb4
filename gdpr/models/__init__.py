"""gdpr's tables, one module per area: the audit log, data-subject requests, and consent
and retention."""

from gdpr.models.audit import *  # noqa: F403
from gdpr.models.privacy import *  # noqa: F403
from gdpr.models.requests import *  # noqa: F403
