"""Outbox stage: durable store-and-forward to the archive (lease → send → ack / retry / dead)."""
