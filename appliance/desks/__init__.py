"""Use-case code for the people: station, review, sign-off, admin, monitoring, settings,
accounts."""
