"""The local web app: a client of the core through the services it is given."""

from web.app import create_app

__all__ = ["create_app"]
