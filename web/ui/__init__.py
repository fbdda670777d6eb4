"""/ui: the live dashboard for operators (fleet, scheduler, charts)."""
