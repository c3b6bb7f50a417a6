"""The RETOUCH and Duke DME adapters on small files written here in those layouts, by hand: a
MetaImage header typed out plus raw bytes, and a MAT level-5 file encoded field by field."""

from __future__ import annotations

import json
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from appliance.synth.oct import GEOMETRIES, OctRendering, draw_oct_case, render_oct
from appliance.validate import oct_formats
from appliance.validate.matv5 import read_mat
from appliance.validate.mhd import read_mhd
from appliance.validate.oct_formats import read_oct_set
from appliance.validate.oct_run import run_oct_validation

SMALL = GEOMETRIES["small"]


@cache
def _rendered(seed: int) -> OctRendering:
    return render_oct(draw_oct_case(np.random.default_rng([seed, 77]), SMALL))


# -- RETOUCH: .mhd header by hand + .raw bytes --------------------------------------------------
def _mhd(path: Path, array: np.ndarray, element: str, spacing: tuple[float, ...], **extra: str):
    z, y, x = array.shape
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        f"BinaryDataByteOrderMSB = {extra.pop('msb', 'False')}",
        f"CompressedData = {extra.pop('compressed', 'False')}",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        f"ElementSpacing = {' '.join(f'{s:.9g}' for s in spacing)}",
        f"DimSize = {x} {y} {z}",
        f"ElementType = {element}",
        f"ElementDataFile = {extra.pop('data', path.with_suffix('.raw').name)}",
    ]
    path.write_text("\n".join(lines) + "\n")
    order = ">" if "msb" in path.name else "<"
    raw = array.astype(array.dtype.newbyteorder(order)).tobytes()
    path.with_suffix(".raw").write_bytes(raw)


def _retouch_set(root: Path) -> Path:
    frame, axial, lateral = SMALL.spacing_mm
    spacing = (lateral, axial, frame)  # MetaImage order: x (A-scans), y (depth), z (B-scans)
    for vendor, case, seed, reference in (("Spectralis", "TRAIN001", 1, True),
                                          ("Cirrus", "TEST002", 2, False)):  # fmt: skip
        folder = root / vendor / case
        folder.mkdir(parents=True)
        r = _rendered(seed)
        _mhd(folder / "oct.mhd", r.volume.astype(np.uint16) * 100, "MET_USHORT", spacing)
        if reference:
            labels = r.fluid_mask.astype(np.uint8)  # 1 = IRF
            labels[:, -8:, :40] = 3  # a PED label deep in the frame: not counted as fluid
            _mhd(folder / "reference.mhd", labels, "MET_UCHAR", spacing)
    return root


def test_retouch_volumes_and_references_are_read(tmp_path: Path) -> None:
    items, _ = read_oct_set(_retouch_set(tmp_path), "retouch")
    assert [i.name for i in items] == ["Cirrus/TEST002", "Spectralis/TRAIN001"]
    assert items[0].spacing_mm == pytest.approx(SMALL.spacing_mm, rel=1e-5)
    assert len(items[0].files) == 2 and len(items[1].files) == 4
    sample = items[1].load()
    r = _rendered(1)
    assert sample.volume.shape == r.volume.shape and sample.volume.dtype == np.uint8
    assert np.corrcoef(sample.volume.ravel(), r.volume.ravel())[0, 1] > 0.99
    assert sample.fluid_mask is not None and np.array_equal(sample.fluid_mask, r.fluid_mask)
    assert items[0].load().fluid_mask is None  # a test-set volume: no reference


def test_retouch_validation_reports_fluid_only(tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = run_oct_validation(_retouch_set(tmp_path / "set"), "retouch", out, n_bootstrap=0)
    assert report["cst"]["mae_um"]["value"] is None
    assert report["ci_dme"] is None and report["quality"] is None
    assert report["fluid_any"]["n"] <= 1  # only the volume with a reference counts
    assert any("right eye is assumed" in note for note in report["dataset"]["notes"])
    assert len(report["dataset"]["files"]) == 6
    assert json.loads((out / "report.json").read_text())["schema"] == "appliance.validate.oct/1"


def test_mhd_big_endian_and_refusals(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 5
    _mhd(tmp_path / "msb.mhd", array, "MET_SHORT", (1.0, 2.0, 3.0), msb="True")
    image = read_mhd(tmp_path / "msb.mhd")
    assert np.array_equal(image.array, array) and image.spacing_mm == (1.0, 2.0, 3.0)
    cases = {
        "compressed MetaImage data": {"compressed": "True"},
        "not supported": {"data": "LOCAL"},
        "points outside": {"data": "../elsewhere.raw"},
    }
    for message, extra in cases.items():
        _mhd(tmp_path / "bad.mhd", array, "MET_SHORT", (1.0, 1.0, 1.0), **extra)
        with pytest.raises(ValueError, match=message):
            read_mhd(tmp_path / "bad.mhd")
    _mhd(tmp_path / "cut.mhd", array, "MET_SHORT", (1.0, 1.0, 1.0))
    (tmp_path / "cut.raw").write_bytes((tmp_path / "cut.raw").read_bytes()[:-2])
    with pytest.raises(ValueError, match="46 bytes, but the header needs 48"):
        read_mhd(tmp_path / "cut.mhd")
    with pytest.raises(ValueError, match="over the limit"):
        read_mhd(tmp_path / "msb.mhd", max_bytes=40)


def test_an_unreadable_volume_is_listed_not_fatal(tmp_path: Path) -> None:
    root = _retouch_set(tmp_path / "set")
    raw = root / "Cirrus" / "TEST002" / "oct.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    report = run_oct_validation(root, "retouch", tmp_path / "out", n_bootstrap=0)
    assert report["n"] == 1 and report["unreadable"]["count"] == 1
    assert report["unreadable"]["volumes"][0]["volume"] == "Cirrus/TEST002"


# -- Duke DME: a MAT level-5 file encoded by hand -----------------------------------------------
_MI = {"i1": 1, "u1": 2, "i4": 5, "u4": 6, "f8": 9}
_MX = {"f8": 6, "u1": 9}


def _element(kind: int, payload: bytes, order: str, pad: bool = True) -> bytes:
    if len(payload) <= 4 and kind != 15:  # small element form
        return struct.pack(order + "I", (len(payload) << 16) | kind) + payload.ljust(4, b"\0")
    body = struct.pack(order + "II", kind, len(payload)) + payload
    return body + b"\0" * (-len(body) % 8 if pad else 0)


def _matrix(name: str, array: np.ndarray, mx: str, stored: str, order: str = "<") -> bytes:
    flags = _element(6, struct.pack(order + "II", _MX[mx], 0), order)
    dims = _element(5, struct.pack(order + f"{array.ndim}i", *array.shape), order)
    label = _element(1, name.encode(), order)
    data = np.asfortranarray(array).astype(np.dtype(stored).newbyteorder(order))
    real = _element(_MI[stored], data.tobytes(order="F"), order)
    return _element(14, flags + dims + label + real, order, pad=False)


def _mat(path: Path, elements: list[bytes], order: str = "<") -> None:
    text = b"MATLAB 5.0 MAT-file, written by a test".ljust(116, b" ")
    version = struct.pack(order + "H", 0x0100)
    path.write_bytes(text + b"\0" * 8 + version + (b"IM" if order == "<" else b"MI")
                     + b"".join(elements))  # fmt: skip


def _duke_subject(path: Path, seed: int) -> OctRendering:
    r = _rendered(seed)
    images = r.volume.transpose(1, 2, 0)  # rows x A-scans x B-scans
    traced = np.zeros(SMALL.frames, dtype=bool)
    traced[::3] = True
    layers = np.full((8, SMALL.ascans, SMALL.frames), np.nan)
    layers[0][:, traced] = r.ilm_px.T[:, traced] + 1.0  # 1-based rows
    layers[7][:, traced] = r.rpe_px.T[:, traced] + 1.0
    fluid = r.fluid_mask.transpose(1, 2, 0).astype(np.float64)
    _mat(path, [
        _element(15, zlib.compress(_matrix("images", images, "u1", "u1")), "<", pad=False),
        _matrix("automaticLayersDME", layers, "f8", "f8"),  # not asked for: skipped
        _element(15, zlib.compress(_matrix("manualLayers1", layers, "f8", "f8")), "<", False),
        _matrix("manualFluid1", fluid, "f8", "u1"),  # a double array stored as uint8
    ])  # fmt: skip
    return r


def test_duke_subject_is_read_and_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oct_formats, "DUKE_SPACING_MM", SMALL.spacing_mm)
    r = _duke_subject(tmp_path / "Subject_01.mat", 3)
    (item,) = oct_formats.read_duke(tmp_path)
    sample = item.load()
    assert np.array_equal(sample.volume, r.volume)
    assert sample.ilm_px is not None and sample.rpe_px is not None and sample.fluid_mask is not None
    assert np.allclose(sample.ilm_px[::3], r.ilm_px[::3], equal_nan=True)
    assert np.isnan(sample.rpe_px[1]).all()
    assert np.array_equal(sample.fluid_mask[::3], r.fluid_mask[::3])
    assert not sample.fluid_mask[1::3].any()
    report = run_oct_validation(tmp_path, "duke", tmp_path / "out", n_bootstrap=0)
    assert report["cst"]["mae_um"]["value"] is None
    if report["boundaries"]["ilm"]["mae_px"]["n"]:  # the quality check passed it
        assert report["boundaries"]["ilm"]["mae_px"]["value"] < 2.0
        assert report["boundaries"]["ilm"]["mae_px"]["n_ascans"] <= 9 * SMALL.ascans
    assert any("carry no spacing" in note for note in report["dataset"]["notes"])


def test_mat_reader_big_endian_small_elements_and_refusals(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    _mat(tmp_path / "be.mat", [_matrix("x", x, "f8", "f8", ">")], ">")
    assert np.array_equal(read_mat(tmp_path / "be.mat")["x"], x)
    with pytest.raises(ValueError, match="no variable 'y'"):
        read_mat(tmp_path / "be.mat", {"y"})
    with pytest.raises(ValueError, match="is over 40 bytes"):
        read_mat(tmp_path / "be.mat", max_bytes=40)
    (tmp_path / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" "))
    with pytest.raises(ValueError, match="HDF5"):
        read_mat(tmp_path / "v73.mat")
    (tmp_path / "junk.mat").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match="not a level-5 MAT-file"):
        read_mat(tmp_path / "junk.mat")
