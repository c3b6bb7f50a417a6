"""Helpers for web tests: accounts per role and a real login through the form (with CSRF)."""

from __future__ import annotations

import re
from typing import Any

PASSWORD = "correct horse battery staple"
ROLES = ("operator", "clinician", "admin")
_TOKEN = re.compile(r'name="csrf[-_]token"\s+(?:content|value)="([^"]+)"')


def csrf_from(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def add_user(services: Any, name: str, role: str, password: str = PASSWORD) -> Any:
    profile = {"full_name": "Dr A. Grader", "credentials": "MD"} if role == "clinician" else {}
    return services.accounts.add(name, role, password, actor="test", **profile)


def login(client: Any, name: str, password: str = PASSWORD) -> Any:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token})


def csrf(client: Any, path: str = "/login") -> str:
    """The CSRF token of the current session, read from a page's meta tag."""
    return csrf_from(client.get(path, follow_redirects=True).get_data(as_text=True))


def logged_in(app: Any, services: Any, role: str, name: str | None = None) -> Any:
    """A fresh test client logged in as a new user with ``role``."""
    name = name or f"{role}1"
    if not any(u.username == name for u in services.accounts.list()):
        add_user(services, name, role)
    client = app.test_client()
    response = login(client, name)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client
