"""/console: the operators' console (tenants, plans, keys, invoices, hives, audit, GDPR),
each page checked against the signed-in operator's areas."""
