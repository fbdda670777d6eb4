"""The three web faces, server-rendered by Django: the live dashboard at /ui (operators), the
operators' console at /console, and the tenants' self-service portal at /portal.

Like inference/, web/ sees the other apps (it renders their data and calls their services
and selectors); no app imports web/. Views stay thin: reads go through each app's
selectors, writes through its services, and every query is scoped to the signed-in
operator's areas or the member's tenant."""
