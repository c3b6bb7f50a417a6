"""SQLite store (one writer), atomic blob files and the schema's migrations."""

from appliance.store.blobs import BlobStore, safe_uid
from appliance.store.db import Store, Tx, utcnow

__all__ = ["BlobStore", "Store", "Tx", "safe_uid", "utcnow"]
