"""The SCUs over DICOM TLS: C-STORE forwarding, the Storage Commitment N-ACTION and the worklist
C-FIND to a real Orthanc with ``DicomTlsEnabled`` that requires our client certificate; and an
archive whose certificate is expired, from an untrusted CA or for another name is refused by
our SCU with the reason in words (the forwarder retries with it as the job's last error)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.audit import AuditTrail
from appliance.capture import Incoming
from appliance.config import Destination, Settings
from appliance.dicom.worklist import Node, NodeUnreachable, query_worklist
from appliance.domain import Source
from appliance.outbox import queue
from appliance.outbox.commit_dimse import request_commitment
from appliance.outbox.dimse import DimseTarget
from appliance.outbox.policy import Verdict
from appliance.outbox.worker import Forwarder
from appliance.runtime.services import Services
from appliance.runtime.services import _target as service_target
from appliance.store import BlobStore, Store
from appliance.tls import TlsClient
from tests.conftest import free_port, fundus, op_bytes, wait_for
from tests.orthanc_server import Orthanc
from tests.tls_certs import Pair, Pki, make_pki

pytestmark = pytest.mark.tool("Orthanc")


class TlsOrthanc(Orthanc):
    """Orthanc answering DICOM only over TLS, and only to clients with a certificate."""

    def __init__(self, root: Path, pki: Pki, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.pki = pki

    def _with_modalities(self, config: dict[str, Any]) -> dict[str, Any]:
        """Remote AEs reached over TLS (Orthanc's ``UseDicomTls``), e.g. to send its Storage
        Commitment reports to the appliance's TLS port."""
        config["DicomModalities"] = {
            name: {"AET": aet, "Host": host, "Port": port, "UseDicomTls": True}
            for name, (aet, host, port) in self.modalities.items()
        }
        return config

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": self.pki.server.cert,
            "DicomTlsPrivateKey": self.pki.server.key,
            "DicomTlsTrustedCertificates": self.pki.ca,
            "DicomTlsRemoteCertificateRequired": True,
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _worklist(folder: Path) -> Path:
    folder.mkdir()
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = (
        "TLS-WL-1",
        "Tls^Ana",
        "19600101",
        "F",
    )
    ds.AccessionNumber = "ACC-TLS"
    ds.StudyInstanceUID = generate_uid()
    step = Dataset()
    step.ScheduledStationAETitle = "SCREENING"
    step.ScheduledProcedureStepStartDate = date.today().strftime("%Y%m%d")
    step.Modality = "OP"
    step.ScheduledProcedureStepID = "SPS-TLS"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / "tls.wl", enforce_file_format=True)
    return folder


@pytest.fixture
def orthanc(tmp_path: Path, pki: Pki) -> Iterator[Orthanc]:
    modalities = {"screening": ("SCREENING", "127.0.0.1", free_port())}  # who may ask to commit
    with TlsOrthanc(
        tmp_path / "orthanc", pki, worklists=_worklist(tmp_path / "wl"), modalities=modalities
    ) as server:
        yield server


def _client(pki: Pki) -> TlsClient:
    return TlsClient(ca=pki.ca, cert=pki.client.cert, key=pki.client.key)


def _target(port: int, tls: TlsClient | None, ae: str = "ORTHANC") -> DimseTarget:
    return DimseTarget("pacs", "127.0.0.1", port, ae, "SCREENING", timeout=5, tls=tls)


def _file(tmp_path: Path, name: str) -> tuple[Path, str]:
    data = op_bytes(fundus(size=(96, 128)))
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(data)
    return path, str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def test_c_store_commitment_and_worklist_over_tls_to_orthanc(
    orthanc: Orthanc, pki: Pki, tmp_path: Path
) -> None:
    path, uid = _file(tmp_path, "tls")
    (result,) = _target(orthanc.dicom_port, _client(pki)).send([path])
    assert (result.verdict, result.status) == (Verdict.DONE, "0x0000"), result
    assert orthanc.sop_uids() == {uid}
    error = request_commitment(
        host="127.0.0.1",
        port=orthanc.dicom_port,
        called_ae="ORTHANC",
        calling_ae="SCREENING",
        timeout=5,
        transaction_uid=generate_uid(),
        items=[(str(pydicom.dcmread(path).SOPClassUID), uid)],
        tls=_client(pki),
    )
    assert error == ""  # the N-ACTION was accepted over TLS
    node = Node("127.0.0.1", orthanc.dicom_port, "ORTHANC", "SCREENING", 5, tls=_client(pki))
    (item,) = query_worklist(node, station_ae="SCREENING", date=date.today().strftime("%Y%m%d"))
    assert item.patient_id == "TLS-WL-1" and item.accession_number == "ACC-TLS"


def test_orthanc_refuses_plain_dimse_and_a_client_without_certificate(
    orthanc: Orthanc, pki: Pki, tmp_path: Path
) -> None:
    path, _ = _file(tmp_path, "refused")
    for tls in (None, TlsClient(ca=pki.ca)):
        (result,) = _target(orthanc.dicom_port, tls).send([path])
        assert result.verdict == Verdict.RETRY, result
    assert orthanc.sop_uids() == set()


def _archive(settings: Settings, tmp_path: Path, server: Pair) -> Services:
    """The appliance's own TLS SCP, with ``server`` as its certificate, as the archive."""
    archive = Services(
        settings.replace(
            data_dir=str(tmp_path / "archive"),
            dicom_port=free_port(),
            dicom_tls_port=free_port(),
            dicom_tls_cert=server.cert,
            dicom_tls_key=server.key,
        )
    )
    archive.start(hotfolder=False, worker=False)
    return archive


@pytest.mark.parametrize(
    ("server", "ca", "host", "reason"),
    [
        ("expired_server", "ca", "127.0.0.1", "certificate has expired"),
        ("other_server", "ca", "127.0.0.1", "unable to get local issuer certificate"),
        (
            "wrong_name_server",
            "ca",
            "127.0.0.1",
            "IP address mismatch, certificate is not valid for '127.0.0.1'.",
        ),
    ],
)
def test_a_bad_archive_certificate_is_retried_with_the_reason(
    settings: Settings, pki: Pki, tmp_path: Path, server: str, ca: str, host: str, reason: str
) -> None:
    archive = _archive(settings, tmp_path, getattr(pki, server))
    try:
        assert archive.scp is not None
        path, uid = _file(tmp_path, "bad")
        target = DimseTarget(
            "pacs",
            host,
            archive.scp.tls_port,
            "SCREENING",
            "SENDER",
            timeout=5,
            tls=TlsClient(ca=getattr(pki, ca)),
        )
        (result,) = target.send([path])
        assert result.verdict == Verdict.RETRY
        assert result.message == f"TLS: the peer's certificate was refused: {reason}"
        assert (
            archive.store.one("SELECT id FROM captures WHERE sop_instance_uid = ?", (uid,)) is None
        )
        with pytest.raises(NodeUnreachable, match=re.escape(reason)):
            query_worklist(
                Node(host, archive.scp.tls_port, "SCREENING", "SENDER", 5, tls=target.tls),
                station_ae="SCREENING",
                date="20260101",
            )
    finally:
        archive.stop()


def test_the_forwarder_keeps_the_tls_reason_on_the_job(
    settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    archive = _archive(settings, tmp_path, pki.expired_server)
    data_dir = tmp_path / "sender"
    store = Store(data_dir / "appliance.db")
    blobs = BlobStore(data_dir)
    try:
        assert archive.scp is not None
        destination = Destination(
            name="pacs",
            host="127.0.0.1",
            port=archive.scp.tls_port,
            ae_title="SCREENING",
            timeout=5,
            tls=True,
            tls_ca=pki.ca,
        )
        target = service_target(destination, "SENDER")  # as service.py builds it
        forwarder = Forwarder(store, blobs, AuditTrail(store, data_dir / "audit.head"), [target])
        path, uid = _file(tmp_path, "job")
        with store.write() as tx:
            queue.enqueue(
                tx,
                kind="received",
                destination="pacs",
                sop_instance_uid=uid,
                file_path=blobs.put(path.read_bytes(), "application/dicom"),
                study=None,
            )
        forwarder.pass_once()
        job = store.one("SELECT * FROM outbox_jobs")
        assert job is not None and (job["state"], job["attempts"]) == ("queued", 1)  # retried
        assert job["last_error"] == (
            "TLS: the peer's certificate was refused: certificate has expired"
        )
    finally:
        store.close()
        archive.stop()


def test_storage_commitment_round_trip_over_tls_both_ways(
    settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """C-STORE and N-ACTION to Orthanc over TLS; Orthanc's N-EVENT-REPORT comes back over TLS
    to the appliance's TLS port, which requires a client certificate (Orthanc's own)."""
    ours = settings.replace(
        dicom_tls_port=free_port(),
        dicom_tls_cert=pki.server.cert,
        dicom_tls_key=pki.server.key,
        dicom_tls_ca=pki.ca,
        dicom_tls_require_client_cert=True,
        dicom_tls_required_aes=("ORTHANC",),  # its reports may not come over plain DIMSE
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
    )
    modalities = {"screening": (ours.dicom_ae_title, "127.0.0.1", ours.dicom_tls_port)}
    with TlsOrthanc(tmp_path / "orthanc", pki, modalities=modalities) as orthanc:
        destination = Destination(
            name="pacs",
            host="127.0.0.1",
            port=orthanc.dicom_port,
            ae_title=orthanc.aet,
            timeout=10,
            storage_commitment=True,
            tls=True,
            tls_ca=pki.ca,
            tls_cert=pki.client.cert,
            tls_key=pki.client.key,
        )
        svc = Services(ours.replace(destinations=(destination,)))
        svc.commitments.poll_seconds = 0.05
        svc.start(hotfolder=False)
        try:
            data = op_bytes(fundus(seed=31, size=(96, 128)))
            svc.ingestor.ingest(Incoming(data=data, source=Source.DICOM, user_id="ae:CAM"))
            uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
            job = wait_for(
                lambda: svc.store.one(
                    "SELECT * FROM outbox_jobs WHERE sop_instance_uid = ? "
                    "AND commitment = 'committed'",
                    (uid,),
                ),
                timeout=30,
            )
            assert job["state"] == "delivered" and orthanc.sop_uids() == {uid}
        finally:
            svc.stop()
