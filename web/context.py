"""Typed access to the core from the views: the services the app was given, and each desk.

Views reach the core only through these: a desk (station, review and its OCT part, admin,
monitoring and its OCT part, site settings, accounts, eye labels) or the few process-wide
answers of the services (health, metrics, the upload intake); never the store, the audit
trail or a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import current_app

if TYPE_CHECKING:
    from appliance.desks.accounts import Accounts
    from appliance.desks.admin import AdminDesk
    from appliance.desks.eye_labels import EyeLabels
    from appliance.desks.monitoring import MonitoringDesk
    from appliance.desks.monitoring_oct import OctMonitoringDesk
    from appliance.desks.review import ReviewDesk
    from appliance.desks.review_oct import OctReview
    from appliance.desks.site_settings import SiteSettingsDesk
    from appliance.desks.station import Station
    from appliance.runtime.services import Services


def services() -> Services:
    return cast("Services", current_app.extensions["services"])


def station() -> Station:
    return services().station


def review() -> ReviewDesk:
    return services().review


def review_oct() -> OctReview:
    return services().review_oct


def admin() -> AdminDesk:
    return services().admin


def monitoring() -> MonitoringDesk:
    return services().monitoring


def monitoring_oct() -> OctMonitoringDesk:
    return services().monitoring_oct


def site_settings() -> SiteSettingsDesk:
    return services().site_settings


def accounts() -> Accounts:
    return services().accounts


def eye_labels() -> EyeLabels:
    return services().eye_labels
