"""/portal: a tenant's members manage their keys, usage, billing, members and privacy."""
