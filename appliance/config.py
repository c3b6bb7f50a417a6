"""Settings, declared once: name, default, help.

Loaded once at start-up from embedded defaults, then a TOML file (``--config`` or
``APPLIANCE_CONFIG``), then ``APPLIANCE_<NAME>`` environment variables, and passed down.
``docs/settings.md`` is generated from these declarations (``appliance settings --markdown``)
and a test fails when the two disagree.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from appliance.destinations import Destination
from appliance.destinations import parse as _destinations

ENV_PREFIX = "APPLIANCE_"
# Settings an admin saved in the web console: <data_dir>/settings.toml, read at start after the
# --config file and before the environment (appliance.desks.site_settings writes and checks it).
SAVED_SETTINGS = "settings.toml"


def _s(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    # --- storage ---
    data_dir: str = _s(
        "./var", "Directory for the database, images and every file the appliance writes."
    )
    min_free_disk_mb: int = _s(
        256,
        "Below this much free space (MiB) new images are refused (C-STORE 0xA700, HTTP 507).",
    )
    # --- web ---
    web_host: str = _s("127.0.0.1", "Address the web UI and API listen on.")
    web_port: int = _s(8080, "Port of the web UI and API.")
    api_token: str = _s(
        "",
        "Bearer token for POST /api/captures. Empty: uploads are refused until one is set.",
    )
    upload_max_bytes: int = _s(
        64 * 1024 * 1024, "Largest accepted upload in bytes; larger ones get HTTP 413."
    )
    web_idle_logoff_minutes: int = _s(
        15, "Idle minutes after which a web session ends; its cookie is refused afterwards."
    )
    web_lockout_failures: int = _s(5, "Failed logins in a row that lock an account.")
    web_lockout_minutes: int = _s(15, "How long a locked account stays locked.")
    web_login_rate_limit: str = _s(
        "20 per minute", "Login attempts allowed per client address (Flask-Limiter syntax)."
    )
    web_tls_cert: str = _s("", "PEM certificate for HTTPS. Empty (with no key): plain HTTP.")
    web_tls_key: str = _s("", "PEM private key for HTTPS, with web_tls_cert.")
    web_threads: int = _s(8, "Worker threads that run web requests (requests are read first).")
    web_connection_limit: int = _s(
        500,
        "Open web connections at most; at the limit a new one replaces the oldest connection "
        "not being served (half-open or idle). Keeps the process under 1,024 descriptors "
        "(pynetdicom watches its sockets with select(), which stops at 1,024).",
    )
    web_header_timeout: float = _s(
        10.0,
        "Seconds a client has to send a request's line and headers (and finish the TLS "
        "handshake); slower connections are closed.",
    )
    web_request_timeout: float = _s(
        120.0, "Seconds a client has to send a whole request, body included (uploads)."
    )
    web_idle_timeout: float = _s(30.0, "Seconds an idle keep-alive web connection is kept open.")
    station_name: str = _s(
        "STATION1", "This camera station's name: worklist filter and monitoring label."
    )
    device_serial: str = _s(
        "",
        "This appliance's serial number in the DICOM objects it makes (equipment, and the seed "
        "of its SR Device Observer UID). Empty: an installation id made once in the data "
        "directory (<data_dir>/installation-id).",
    )
    # --- DICOM ---
    dicom_ae_title: str = _s("SCREENING", "AE title of the appliance's C-STORE / C-ECHO SCP.")
    dicom_host: str = _s(
        "0.0.0.0", "Address the DICOM SCP listens on (the camera is another device)."
    )
    dicom_port: int = _s(11112, "Port of the DICOM SCP.")
    dicom_allowed_calling_aes: tuple[str, ...] = _s(
        (), "Calling AE titles allowed to associate. Empty: any camera may associate."
    )
    dicom_acse_timeout: float = _s(30.0, "Seconds to wait for association messages.")
    dicom_dimse_timeout: float = _s(60.0, "Seconds to wait for a DIMSE message.")
    dicom_network_timeout: float = _s(
        60.0, "Seconds of network silence before an association is dropped."
    )
    max_dicom_bytes: int = _s(
        512 * 1024 * 1024, "Largest DICOM instance accepted from any path, in bytes."
    )
    max_inflated_bytes: int = _s(
        512 * 1024 * 1024,
        "Cap on the inflated size of a Deflated transfer syntax dataset, in bytes.",
    )
    max_image_pixels: int = _s(
        60_000_000,
        "Largest image accepted, in pixels per frame, from any path (decompression-bomb guard "
        "for PNG/JPEG/TIFF and DICOM Pixel Data).",
    )
    max_image_frames: int = _s(
        1024, "Most frames a multi-frame DICOM image may hold; each is decoded before success."
    )
    # --- DICOM TLS (PS3.15 Annex B, BCP 195) ---
    dicom_tls_cert: str = _s(
        "",
        "PEM certificate of the DICOM SCP's TLS port. Empty (with no key): no TLS port. TLS 1.2 "
        "at least, forward-secret AEAD ciphers only.",
    )
    dicom_tls_key: str = _s("", "PEM private key, with dicom_tls_cert.")
    dicom_tls_port: int = _s(
        2762,
        "Port of the DICOM SCP's TLS listener (2762: IANA dicom-tls), beside the plain "
        "dicom_port, with the same front door and limits.",
    )
    dicom_tls_ca: str = _s(
        "", "PEM bundle of CAs trusted for camera (client) certificates on the TLS port."
    )
    dicom_tls_require_client_cert: bool = _s(
        False,
        "Refuse TLS clients without a certificate from dicom_tls_ca (mutual TLS); refusals are "
        "audited as Security Alerts.",
    )
    dicom_tls_required_aes: tuple[str, ...] = _s(
        (),
        "Calling AE titles that must use the TLS port: refused on the plain port (A-ASSOCIATE-RJ, "
        "calling AE not recognised; audited). Other cameras may still use plain DIMSE.",
    )
    dicom_tls_only: bool = _s(
        False,
        "Close the plain dicom_port: every camera must use TLS. Off: plain DIMSE stays for "
        "cameras that cannot do TLS.",
    )
    # --- DICOM front door (what a TCP connection may cost before and after it is known) ---
    dicom_request_seconds: float = _s(
        5.0,
        "A new DICOM connection must deliver its whole A-ASSOCIATE-RQ within this many seconds "
        "or it is closed (an idle or trickling connection holds nothing longer).",
    )
    dicom_max_pdu_bytes: int = _s(
        262144,
        "Maximum PDU length the SCP advertises and accepts, in bytes (16384-16777216); a PDU "
        "(or an A-ASSOCIATE-RQ) declaring more is refused before it is read.",
    )
    dicom_max_associations: int = _s(
        32, "Associations the SCP carries at once; more are rejected (local limit exceeded)."
    )
    dicom_max_associations_per_address: int = _s(
        10,
        "Connections one network address may hold at once, associated or still asking; more "
        "are rejected (local limit exceeded).",
    )
    dicom_in_flight_bytes: int = _s(
        1024 * 1024 * 1024,
        "Memory budget for DICOM datasets received but not yet answered, all associations "
        "together, in bytes; an association that would exceed it is aborted (the camera "
        "resends). At least max_dicom_bytes, or the largest instance cannot arrive.",
    )
    # --- hot folder ---
    hotfolder_dir: str = _s("", "Folder the camera exports into. Empty: <data_dir>/inbox.")
    hotfolder_stable_seconds: float = _s(
        2.0, "A hot-folder file is taken only after its size and time stayed unchanged this long."
    )
    hotfolder_poll_seconds: float = _s(0.5, "How often the hot folder is scanned.")
    hotfolder_keep_processed_days: float = _s(
        7.0,
        "Days the hot folder's processed/ copies are kept after they were taken (the stored "
        "capture is the record). 0: kept until someone deletes them.",
    )
    # --- quality gate (calibrated on degraded synthetic photographs; see tests/quality) ---
    quality_min_focus: float = _s(
        0.5, "Fine-over-coarse green detail ratio below this is out_of_focus (no unit)."
    )
    quality_min_brightness: float = _s(40.0, "Mean field luma (0-255) below this is too_dark.")
    quality_max_brightness: float = _s(170.0, "Mean field luma (0-255) above this is too_bright.")
    quality_max_saturated_fraction: float = _s(
        0.05,
        "Share of field pixels clipped (>= 250, green or blue; red clips on gradable photographs) "
        "above this is too_bright.",
    )
    quality_min_contrast: float = _s(
        0.1, "Green 5th-95th percentile spread after flattening below this is low_contrast."
    )
    quality_max_unevenness: float = _s(
        0.35,
        "1 - darkest/brightest of 8 field sectors above this is uneven_illumination, when the "
        "darkest sector is also below quality_min_sector_brightness.",
    )
    quality_min_sector_brightness: float = _s(
        35.0,
        "Median luma (0-255) of the darkest field sector below this is uneven_illumination, "
        "when the field is also uneven (quality_max_unevenness).",
    )
    quality_max_center_offset: float = _s(
        0.25, "Field centre offset from frame centre (field radii) above this is off_center."
    )
    quality_min_field_coverage: float = _s(
        0.9,
        "Share of the field's central disc (60 % of its radius) inside the frame and any crop "
        "below this is off_center.",
    )
    quality_min_fundus_likeness: float = _s(
        0.5,
        "Fundus likeness (0-1: round bright field, dark surround, red) below this is not_fundus.",
    )
    # --- camera qualification ---
    camera_model: str = _s(
        "",
        'The camera that feeds the hot folder and uploads, as "Manufacturer / Model" (DICOM '
        "photographs name their own). Empty: an unknown camera.",
    )
    camera_qualification_required: bool = _s(
        True,
        "Photographs from a camera model not qualified (`appliance cameras qualify`) never get "
        "an automated negative outcome: they go to human grading. A referable finding still "
        "refers.",
    )
    # --- models ---
    models_dir: str = _s(
        "", "Folder of ONNX models and their cards. Empty: the bundled models/ folder."
    )
    model_variant: str = _s("int8", "Model file variant to load: int8 (default) or fp32.")
    model_providers: tuple[str, ...] = _s(
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        "onnxruntime providers in order of preference; those this build lacks are skipped.",
    )
    model_threads: int = _s(2, "CPU threads per model session.")
    trt_cache_dir: str = _s("", "TensorRT engine cache. Empty: <data_dir>/trt-cache.")
    trt_fp16: bool = _s(True, "Let TensorRT build FP16 engines.")
    uid_root: str = _s(
        "2.25.", "UID root for objects the appliance creates (2.25. = UUID-derived UIDs)."
    )
    # --- worklist ---
    worklist_host: str = _s("", "Modality Worklist (RIS) address. Empty: no worklist configured.")
    worklist_port: int = _s(104, "Modality Worklist port.")
    worklist_ae_title: str = _s("", "Modality Worklist AE title.")
    worklist_tls: bool = _s(False, "Query the Modality Worklist over DICOM TLS.")
    worklist_tls_ca: str = _s(
        "", "PEM CAs trusted for the worklist's certificate. Empty: the system's."
    )
    worklist_tls_cert: str = _s("", "PEM client certificate for the worklist, if it wants one.")
    worklist_tls_key: str = _s("", "PEM private key, with worklist_tls_cert.")
    # --- forwarding ---
    destinations: tuple[Destination, ...] = _s(
        (),
        "Archives to forward to: TOML `[[destinations]]` tables: name, kind (dimse: host, port, "
        "ae_title, storage_commitment, tls, tls_ca, tls_cert, tls_key; stow: url, username, "
        "password), timeout. With tls = true the association (and Storage Commitment's) runs "
        "over DICOM TLS, checking the archive's certificate and host name against tls_ca. With "
        "storage_commitment = true the archive is asked for Storage Commitment after delivery, "
        "answers on this appliance's SCP, and retention keeps local files until it commits. "
        "Empty: nothing is forwarded.",
    )
    outbox_backoff_seconds: float = _s(5.0, "First retry delay; doubles per attempt.")
    outbox_backoff_cap_seconds: float = _s(3600.0, "Longest delay between retries.")
    retention_days: int = _s(
        0,
        "Days after every destination confirmed delivery of all objects made from a capture "
        "before its local files (image, heatmap, objects) are deleted, audited. 0: never delete.",
    )
    documents_quiet_seconds: float = _s(
        1800.0,
        "A visit whose protocol is not complete gets its SR and PDF report after this many "
        "seconds without a new photograph. 0: only complete visits get them.",
    )
    heatmap_secondary_capture: bool = _s(
        False,
        "Also send each analysed photograph's heatmap overlay as a DICOM Secondary Capture "
        "(series 'AI heatmaps') to every destination. Off: the heatmaps stay in the PDF report.",
    )
    clinic_name: str = _s(
        "", "Clinic named at the top of every PDF report page. Empty: a neutral report header."
    )
    clinic_address: str = _s(
        "",
        "The clinic's address under its name on the PDF report; a newline starts a second line "
        "(further lines are joined to it). Empty: no address.",
    )
    # --- outcome ---
    outcome_rules: str = _s(
        "", "Guideline rule file (TOML) for the visit outcome. Empty: the shipped default."
    )
    # --- monitoring (admin console) ---
    monitoring_days: int = _s(30, "Days the admin console's monitoring page shows, up to today.")
    monitoring_psi_window_days: int = _s(
        7, "Days of photographs each drift figure (PSI) covers, ending with the day shown."
    )
    monitoring_psi_min_photos: int = _s(
        100,
        "Fewer photographs than this in a window: no PSI is shown (small samples look drifted "
        "by chance, about 9/n with 10 bins).",
    )
    monitoring_psi_alert: float = _s(
        0.25,
        "Population stability index of brightness or sharpness against the validation "
        "reference at or above which the console shows a drift alert (0.1-0.25: moderate).",
    )
    monitoring_reference: str = _s(
        "",
        "Input-statistics reference (JSON from `python -m appliance.tools.drift_reference`). "
        "Empty: the shipped one (the models' synthetic held-out set).",
    )
    # --- processing ---
    log_level: str = _s(
        "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR. Logs never carry PHI."
    )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def models_path(self) -> Path:
        if self.models_dir:
            return Path(self.models_dir).resolve()
        return Path(__file__).resolve().parents[1] / "models"

    @property
    def trt_cache_path(self) -> Path:
        return (
            Path(self.trt_cache_dir).resolve()
            if self.trt_cache_dir
            else self.data_path / "trt-cache"
        )

    @property
    def inbox_path(self) -> Path:
        return (
            Path(self.hotfolder_dir).resolve() if self.hotfolder_dir else self.data_path / "inbox"
        )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def declared() -> list[tuple[str, Any, str]]:
    """(name, default, help) for every setting, in declaration order."""
    return [(f.name, f.default, f.metadata["help"]) for f in fields(Settings)]


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if name == "destinations":
        return _destinations(value)
    try:
        if kind_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if kind_name == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind_name == "float":
            return float(value)
        if kind_name == "str":
            return str(value)
        if kind_name.startswith("tuple"):
            if isinstance(value, str):
                return tuple(item.strip() for item in value.split(",") if item.strip())
            return tuple(str(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r}: cannot use {value!r} as {kind_name}") from None
    raise TypeError(f"setting {name!r} has an unsupported type {kind_name}")


def load(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then the TOML file, then ``<data_dir>/settings.toml`` (saved by an admin in
    the web console), then APPLIANCE_* variables, then keyword overrides."""
    env = os.environ if environ is None else environ
    kinds = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
        for key, value in table.items():
            if key not in kinds:
                raise ValueError(f"{path}: unknown setting {key!r}")
            values[key] = value
    values.update(_saved(values, env, overrides, kinds))
    for name in kinds:
        if name == "destinations":
            continue  # tables: only in the TOML file
        env_value = env.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = env_value
    values.update(overrides)
    for name in list(values):
        if name not in kinds:
            raise ValueError(f"unknown setting {name!r}")
        values[name] = _coerce(name, kinds[name], values[name])
    return Settings(**values)


def _saved(
    values: Mapping[str, Any], env: Mapping[str, str], overrides: Mapping[str, Any], kinds: Any
) -> dict[str, Any]:
    """The admin console's saved settings file in the data directory, if there is one."""
    data_dir = overrides.get("data_dir") or env.get(ENV_PREFIX + "DATA_DIR")
    path = Path(str(data_dir or values.get("data_dir") or Settings.data_dir)) / SAVED_SETTINGS
    if not path.is_file():
        return {}
    fix = f"fix it in the admin console or delete {path}"
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc}); {fix}") from None
    for key in table:
        if key not in kinds or key == "data_dir":
            raise ValueError(f"{path}: setting {key!r} is not allowed there; {fix}")
    return table


def markdown() -> str:
    """The settings reference, as committed in docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "Generated by `appliance settings --markdown`; do not edit by hand.",
        "Each setting can be given in the TOML file named by `--config` or `APPLIANCE_CONFIG`",
        "(top-level `name = value`), or as the environment variable `APPLIANCE_<NAME>`",
        "(lists comma-separated); the environment wins over the file.",
        "",
        "| name | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, default, help_text in declared():
        shown = (
            "(empty)"
            if default in ("", ())
            else f"`{', '.join(default)}`"
            if isinstance(default, tuple)
            else f"`{default}`"
        )
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {shown} | {help_text} |")
    return "\n".join(lines) + "\n"
