"""Process wiring: settings → store, audit, ingest, pipeline, SCP, hot folder.

``Services`` is also what the web app is given: it talks to the core only through it.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
from dataclasses import fields
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.audit import AuditTrail, EventType, events
from appliance.capture import Incoming, Ingestor, Limits
from appliance.capture.hotfolder import HotFolder
from appliance.capture.scp import StorageSCP
from appliance.config import Destination, Settings
from appliance.desks.accounts import Accounts
from appliance.desks.admin import AdminDesk
from appliance.desks.eye_labels import EyeLabels
from appliance.desks.monitoring import MonitoringDesk
from appliance.desks.monitoring_oct import OctMonitoringDesk
from appliance.desks.review import ReviewDesk
from appliance.desks.review_oct import OctReview
from appliance.desks.site_settings import SiteSettingsDesk
from appliance.desks.station import Station
from appliance.dicom.report_pdf import Clinic
from appliance.domain import Capture, Source
from appliance.errors import ApplianceError
from appliance.inference import ModelIntegrityError, Screener
from appliance.inference.oct.fluid_net import FluidNet
from appliance.inference.oct.measure import CLASSICAL_FLUID
from appliance.inference.runtime import choose_providers
from appliance.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from appliance.metrics import Metrics
from appliance.outbox.commitment import Commitments
from appliance.outbox.dimse import DimseTarget
from appliance.outbox.retention import Retention
from appliance.outbox.stow import StowTarget
from appliance.outbox.worker import Forwarder, Target
from appliance.outcome import RuleSet, load_rules
from appliance.pipeline import Pipeline, due
from appliance.pipeline.oct_documents import appliance_device
from appliance.quality import QualityThresholds
from appliance.store import BlobStore, Store
from appliance.tls import TlsClient, server_context

LOGGER = logging.getLogger(__name__)
MIB = 1024 * 1024


def thresholds_from(settings: Settings) -> QualityThresholds:
    return QualityThresholds(
        **{f.name: getattr(settings, f"quality_{f.name}") for f in fields(QualityThresholds)}
    )


def _target(d: Destination, calling_ae: str) -> Target:
    if d.kind == "stow":
        return StowTarget(d.name, d.url, d.ae_title, d.username, d.password, d.timeout)
    return DimseTarget(
        d.name,
        d.host,
        d.port,
        d.ae_title,
        calling_ae,
        d.timeout,
        storage_commitment=d.storage_commitment,
        tls=TlsClient(d.tls_ca, d.tls_cert, d.tls_key) if d.tls else None,
    )


def scp_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's TLS context, or None when no certificate is configured."""
    s = settings
    if not (s.dicom_tls_cert or s.dicom_tls_key):
        return None
    if not (s.dicom_tls_cert and s.dicom_tls_key):
        raise ValueError("dicom_tls_cert and dicom_tls_key go together")
    return server_context(
        s.dicom_tls_cert,
        s.dicom_tls_key,
        s.dicom_tls_ca,
        require_client_cert=s.dicom_tls_require_client_cert,
    )


def rules_from(settings: Settings) -> RuleSet:
    return load_rules(Path(settings.outcome_rules) if settings.outcome_rules else None)


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_image_pixels=settings.max_image_pixels,
        max_inflated_bytes=settings.max_inflated_bytes,
        max_image_frames=settings.max_image_frames,
    )


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        (data := settings.data_path).mkdir(parents=True, exist_ok=True)
        self.store = Store(data / "appliance.db")
        self.blobs = BlobStore(data, settings.min_free_disk_mb * MIB)
        self.audit = AuditTrail(self.store, data / "audit.head")
        self.accounts = Accounts(
            self.store,
            self.audit,
            idle_minutes=settings.web_idle_logoff_minutes,
            lockout_failures=settings.web_lockout_failures,
            lockout_minutes=settings.web_lockout_minutes,
        )
        self.limits = limits_from(settings)
        self.metrics = Metrics()
        self.screener, self.model_status = self._load_models()
        self.oct_fluid, self.oct_fluid_status = self._load_oct_fluid()
        self.rules = rules_from(settings)
        self.pipeline = Pipeline(
            self.store,
            self.blobs,
            self.audit,
            self.limits,
            thresholds_from(settings),
            rules=self.rules,
            screener=self.screener,
            metrics=self.metrics,
            destinations=tuple(d.name for d in settings.destinations),
            uid_root=settings.uid_root,
            on_queued=lambda: self.forwarder.notify(),
            quiet_seconds=settings.documents_quiet_seconds,
            heatmap_secondary_capture=settings.heatmap_secondary_capture,
            camera_model=settings.camera_model,
            camera_qualification_required=settings.camera_qualification_required,
            clinic=Clinic(settings.clinic_name, settings.clinic_address),
            oct_fluid=self.oct_fluid,
            device=appliance_device(settings),
        )
        self.forwarder = Forwarder(
            self.store,
            self.blobs,
            self.audit,
            [_target(d, settings.dicom_ae_title) for d in settings.destinations],
            backoff_base=settings.outbox_backoff_seconds,
            backoff_cap=settings.outbox_backoff_cap_seconds,
        )
        self.commitments = Commitments(
            self.store,
            self.blobs,
            self.audit,
            [t for t in self.forwarder.targets if isinstance(t, DimseTarget)],
            uid_root=settings.uid_root,
            on_resend=self.forwarder.notify,
        )
        self.retention = Retention(self.store, self.blobs, self.audit, settings.retention_days)
        self._build_desks(settings)
        self.ingestor = Ingestor(
            self.store,
            self.blobs,
            self.audit,
            self.limits,
            max_bytes=settings.max_dicom_bytes,
            on_new=self.pipeline.notify,
            metrics=self.metrics,
            fallback_identity=self.station.hotfolder_identity,
        )
        self.metrics.bind(self.pipeline.pending, self._outbox_depth)
        self.metrics.models.info(
            {
                "status": self.model_status.split(":")[0],
                **{
                    m["task"].replace("-", "_"): f"{m['name']}@{m['version']} {m['variant']} "
                    f"{m['provider']}"
                    for m in self.models()
                },
            }
        )
        self.scp: StorageSCP | None = None
        self.hotfolder: HotFolder | None = None
        self.started = False

    def _build_desks(self, settings: Settings) -> None:
        """The desks the web app reaches: one object each, built once."""
        self.review = ReviewDesk(
            self.store, self.blobs, self.audit, settings, self.forwarder, accounts=self.accounts
        )
        self.review_oct = OctReview(self.store, self.blobs, settings)
        self.admin = AdminDesk(
            self.store,
            self.audit,
            settings,
            forwarder=self.forwarder,
            build_documents=lambda: self.pipeline.notify(0),
            loaded_models=self.models,
        )
        self.monitoring = MonitoringDesk(self.store, settings)
        self.monitoring_oct = OctMonitoringDesk(self.store, settings)
        self.site_settings = SiteSettingsDesk(self.store, self.audit, settings)
        self.station = Station.build(settings, self.store, self.blobs, self.audit, self.limits)
        self.eye_labels = EyeLabels(self.store, self.audit, self.pipeline, self.pipeline.notify)

    def _load_models(self) -> tuple[Screener | None, str]:
        """The installed models, hash-checked; a mismatch is refused, audited and reported."""
        s = self.settings
        try:
            providers = choose_providers(s.model_providers, s.trt_cache_path, s.trt_fp16)
            screener = Screener.load(s.models_path, s.model_variant, providers, s.model_threads)
        except ModelIntegrityError as exc:
            LOGGER.error("screening models refused: %s", exc.message)
            self.audit.log(events.model_integrity(exc.message))
            return None, f"refused: {exc.message}"
        if not screener.sessions:
            return None, "none installed"
        return screener, "installed"

    def _load_oct_fluid(self) -> tuple[FluidNet | None, str]:
        """The installed ``oct-fluid`` model, hash- and card-checked, loaded once; a card or
        file that fails its checks is refused, logged, audited and reported, and the OCT fluid
        is measured by the classical detector."""
        s = self.settings
        try:
            providers = choose_providers(s.model_providers, s.trt_cache_path, s.trt_fp16)
            net = FluidNet.find(s.models_path, s.model_variant, providers, s.model_threads)
        except ModelIntegrityError as exc:
            LOGGER.error("OCT fluid model refused, classical detector used: %s", exc.message)
            self.audit.log(events.model_integrity(exc.message))
            return None, f"{CLASSICAL_FLUID}: the oct-fluid model was refused: {exc.message}"
        if net is None:
            return None, f"{CLASSICAL_FLUID} (no oct-fluid model installed)"
        return net, net.method

    metrics_content_type = METRICS_CONTENT_TYPE

    def web_secret(self) -> bytes:
        """The key that signs web cookies: random, made once, readable by the service only."""
        path = self.settings.data_path / "web-secret.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
            out.flush()
            os.fsync(out.fileno())
        return path.read_bytes()

    def models(self) -> list[dict[str, Any]]:
        fundus = self.screener.describe() if self.screener is not None else []
        return fundus + ([self.oct_fluid.describe()] if self.oct_fluid is not None else [])

    def start(self, *, dicom: bool = True, hotfolder: bool = True, worker: bool = True) -> None:
        s = self.settings
        if worker:
            self.pipeline.start()
            if self.forwarder.targets:
                self.forwarder.start()
            self.commitments.start()  # only with a storage_commitment destination
            self.retention.start()  # only when retention_days > 0
        if dicom:
            self.scp = StorageSCP(
                self.ingestor,
                ae_title=s.dicom_ae_title,
                host=s.dicom_host,
                port=s.dicom_port,
                allowed_calling_aes=s.dicom_allowed_calling_aes,
                acse_timeout=s.dicom_acse_timeout,
                dimse_timeout=s.dicom_dimse_timeout,
                network_timeout=s.dicom_network_timeout,
                request_seconds=s.dicom_request_seconds,
                max_pdu_bytes=s.dicom_max_pdu_bytes,
                max_associations=s.dicom_max_associations,
                max_associations_per_address=s.dicom_max_associations_per_address,
                in_flight_bytes=s.dicom_in_flight_bytes,
                max_message_bytes=s.max_dicom_bytes,
                on_commitment_report=(
                    self.commitments.on_report if self.commitments.targets else None
                ),
                tls=scp_tls_context(s),
                tls_port=s.dicom_tls_port,
                plain=not s.dicom_tls_only,
                tls_required_aes=s.dicom_tls_required_aes,
            )
            self.scp.start()
        if hotfolder:
            self.hotfolder = HotFolder(
                self.ingestor,
                s.inbox_path,
                stable_seconds=s.hotfolder_stable_seconds,
                poll_seconds=s.hotfolder_poll_seconds,
                max_bytes=s.max_dicom_bytes,
                keep_processed_days=s.hotfolder_keep_processed_days,
            )
            self.hotfolder.start()
        self.started = True
        self._activity(EventType.APPLICATION_START)

    def stop(self) -> None:
        if self.hotfolder is not None:
            self.hotfolder.stop()
        if self.scp is not None:
            self.scp.stop()
        self.pipeline.stop()
        self.forwarder.stop()
        self.commitments.stop()
        self.retention.stop()
        if self.started:
            self._activity(EventType.APPLICATION_STOP)
            self.started = False
        self.store.close()

    def _activity(self, event_type: EventType) -> None:
        self.audit.log(
            events.application_activity(
                event_type, ae_title=self.settings.dicom_ae_title, version=__version__
            )
        )

    # -- what the web app may ask --------------------------------------------------------
    def ingest_upload(
        self, data: bytes, fields: dict[str, Any], *, user_id: str, address: str
    ) -> Capture:
        return self.ingestor.ingest(
            Incoming(
                data=data,
                source=Source.UPLOAD,
                user_id=user_id,
                source_address=address,
                fields=fields,
            )
        )

    def refuse_upload(self, error: ApplianceError, *, user_id: str, address: str) -> None:
        self.ingestor.refuse(
            Incoming(data=b"", source=Source.UPLOAD, user_id=user_id, source_address=address), error
        )

    def _outbox_depth(self) -> float:
        return float(
            self.store.scalar(
                "SELECT count(*) FROM outbox_jobs WHERE state IN ('queued', 'leased')"
            )
            or 0
        )

    def alive(self) -> bool:
        """Liveness for the systemd watchdog: the database answers and the workers run."""
        if self.store.scalar("SELECT 1") != 1:
            return False
        return self.pipeline.running() if self.started else True

    def health(self) -> dict[str, Any]:
        """Counts only: no PHI. "degraded" while result documents are dead-lettered."""
        counts = (
            self.store.one(
                "SELECT count(*) AS captures, "
                "coalesce(sum(status = 'received'), 0) AS pending_analysis, "
                "coalesce(sum(status = 'failed'), 0) AS failed_analysis FROM captures"
            )
            or {}
        )
        outbox = self.store.scalar(
            "SELECT count(*) FROM outbox_jobs WHERE state IN ('queued', 'leased')"
        )
        documents = due.counts(self.store)
        return {
            "status": "degraded" if documents["dead"] else "ok",
            "version": __version__,
            "schema_version": self.store.schema_version,
            "captures": counts.get("captures", 0),
            "pending_analysis": counts.get("pending_analysis", 0),
            "failed_analysis": counts.get("failed_analysis", 0),
            "outbox_pending": int(outbox or 0),
            "documents_due": documents["due"],
            "documents_dead": documents["dead"],
            "dicom_scp": self.scp is not None,
            "hotfolder": self.hotfolder is not None,
            "screening_model": self.model_status,
            "rule_set": self.rules.label,
            "models": [
                {key: m[key] for key in ("name", "version", "task", "variant", "provider")}
                for m in self.models()
            ],
        }
