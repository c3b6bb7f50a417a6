"""Each label format on a small file, and the exact rejection of malformed ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.validate import FORMATS, Row, read_labels

SYNTH_HEADER = (
    "image,eye,field,dr_grade,referable_dr,dme,cdr,glaucoma_suspect,notch,gradable,quality,"
    "defect,camera,pigmentation,age_band,sex,seed"
)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_formats_are_the_documented_ones() -> None:
    assert FORMATS == ("synth", "aptos", "eyepacs", "messidor2", "idrid", "refuge", "eyeq")


def test_row_derives_referable_from_grade_or_dme() -> None:
    assert Row("a.png", dr_grade=2).referable_dr is True
    assert Row("a.png", dr_grade=1, dme=True).referable_dr is True
    assert Row("a.png", dr_grade=1, dme=False).referable_dr is False
    assert Row("a.png", dr_grade=0).referable_dr is False  # DME not graded: grade decides
    assert Row("a.png", dme=False).referable_dr is None
    assert Row("a.png", dr_grade=4, referable_dr=False).referable_dr is False  # given wins
    with pytest.raises(ValueError, match="dr_grade must be 0-4"):
        Row("a.png", dr_grade=5)


def test_synth(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "0.png")
    _image(tmp_path / "img" / "1.png")
    _write(
        tmp_path / "labels.csv",
        f"{SYNTH_HEADER}\n"
        "img/0.png,R,macula,3,1,0,0.45,0,0,1,good,,cam-a,0.1,40-59,F,7\n"
        "img/1.png,L,disc,0,0,0,0.72,1,1,0,reject,defocus,cam-b,0.9,60-79,M,8\n",
    )
    rows = read_labels(tmp_path, None, "synth")
    assert rows[0] == Row(
        image="img/0.png",
        dr_grade=3,
        referable_dr=True,
        dme=False,
        cdr=0.45,
        glaucoma_suspect=False,
        gradable=True,
        quality="good",
        subgroups={
            "camera": "cam-a",
            "pigmentation": "light",
            "age_band": "40-59",
            "sex": "F",
            "eye": "right",
        },
    )
    assert rows[1].gradable is False and rows[1].quality == "reject"
    assert rows[1].subgroups["pigmentation"] == "dark" and rows[1].subgroups["eye"] == "left"


def test_aptos_in_train_images_or_directly(tmp_path: Path) -> None:
    _image(tmp_path / "train_images" / "000c1434d8d7.png")
    _image(tmp_path / "001639a390f0.jpg")
    _write(tmp_path / "train.csv", "id_code,diagnosis\n000c1434d8d7,2\n001639a390f0,0\n")
    rows = read_labels(tmp_path, None, "aptos")
    assert [(r.image, r.dr_grade, r.referable_dr) for r in rows] == [
        ("train_images/000c1434d8d7.png", 2, True),
        ("001639a390f0.jpg", 0, False),
    ]
    assert rows[0].dme is None and rows[0].subgroups == {}


def test_eyepacs_eye_from_suffix(tmp_path: Path) -> None:
    _image(tmp_path / "10_left.jpeg")
    _image(tmp_path / "10_right.jpeg")
    labels = _write(tmp_path / "trainLabels.csv", "image,level\n10_left,0\n10_right,4\n")
    rows = read_labels(tmp_path, labels, "eyepacs")
    assert [(r.image, r.dr_grade, r.subgroups) for r in rows] == [
        ("10_left.jpeg", 0, {"eye": "left"}),
        ("10_right.jpeg", 4, {"eye": "right"}),
    ]


def test_messidor2_adjudicated_grades(tmp_path: Path) -> None:
    _image(tmp_path / "20051020_43808_0100_PP.png")
    _image(tmp_path / "IM000001.JPG")
    labels = _write(
        tmp_path / "messidor_data.csv",
        "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
        "20051020_43808_0100_PP.png,1,1,1\n"
        "IM000001.JPG,,,0\n",
    )
    rows = read_labels(tmp_path, labels, "messidor2")
    assert (rows[0].dr_grade, rows[0].dme, rows[0].referable_dr, rows[0].gradable) == (
        1,
        True,
        True,
        True,
    )
    assert (rows[1].dr_grade, rows[1].referable_dr, rows[1].gradable) == (None, None, False)


def test_idrid_header_with_trailing_space_and_odd_case(tmp_path: Path) -> None:
    _image(tmp_path / "IDRiD_001.jpg")
    _image(tmp_path / "IDRiD_002.jpg")
    labels = _write(
        tmp_path / "idrid.csv",
        "Image name,Retinopathy grade,Risk of macular edema ,,\nIDRiD_001,3,2,,\nIDRiD_002,0,0,,\n",
    )
    rows = read_labels(tmp_path, labels, "idrid")
    assert [(r.image, r.dr_grade, r.dme) for r in rows] == [
        ("IDRiD_001.jpg", 3, True),
        ("IDRiD_002.jpg", 0, False),
    ]
    messy = _write(
        tmp_path / "messy.csv",
        " IMAGE NAME , retinopathy_grade,RISK OF MACULAR EDEMA\nIDRiD_001,1,1\n",
    )
    assert read_labels(tmp_path, messy, "idrid")[0].dme is True


def test_refuge_and_origa(tmp_path: Path) -> None:
    _image(tmp_path / "g0001.jpg")
    _image(tmp_path / "n0001.jpg")
    refuge = _write(tmp_path / "refuge.csv", "ImgName,Label\ng0001.jpg,1\nn0001.jpg,0\n")
    rows = read_labels(tmp_path, refuge, "refuge")
    assert [(r.image, r.glaucoma_suspect, r.cdr) for r in rows] == [
        ("g0001.jpg", True, None),
        ("n0001.jpg", False, None),
    ]
    _image(tmp_path / "001.jpg")
    origa = _write(tmp_path / "origa.csv", "Eye,Filename,ExpCDR,Set,Glaucoma\nOD,001.jpg,0.7,A,1\n")
    (row,) = read_labels(tmp_path, origa, "refuge")
    assert (row.cdr, row.glaucoma_suspect, row.subgroups) == (0.7, True, {"eye": "right"})


def test_eyeq_quality_levels(tmp_path: Path) -> None:
    for name in ("1_left.jpeg", "1_right.jpeg", "2_left.jpeg"):
        _image(tmp_path / name)
    labels = _write(
        tmp_path / "Label_EyeQ_test.csv",
        ",image,quality,DR_grade\n0,1_left.jpeg,0,0\n1,1_right.jpeg,1,2\n2,2_left.jpeg,2,0\n",
    )
    rows = read_labels(tmp_path, labels, "eyeq")
    assert [(r.quality, r.gradable, r.dr_grade) for r in rows] == [
        ("good", True, 0),
        ("usable", True, 2),
        ("reject", False, 0),
    ]
    assert rows[0].subgroups == {"eye": "left"}


def _error(tmp_path: Path, fmt: str, text: str) -> str:
    labels = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError) as info:
        read_labels(tmp_path, labels, fmt)
    return str(info.value)


def test_missing_column_names_file_line_and_column(tmp_path: Path) -> None:
    message = _error(tmp_path, "aptos", "id_code,grade\nabc,1\n")
    assert re.fullmatch(
        r".*bad\.csv: line 1: missing column\(s\) 'diagnosis' \(found .*\)", message
    )


def test_missing_column_after_blank_lines_names_the_header_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "eyepacs", "\n\nimage,lvl\n")
    assert message.endswith("bad.csv: line 3: missing column(s) 'level' (found 'image', 'lvl')")


def test_bad_value_names_file_line_and_column(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    message = _error(tmp_path, "aptos", "id_code,diagnosis\na,1\n\nb,7\n")
    assert message.endswith("bad.csv: line 4, column 'diagnosis': expected an integer 0-4, got '7'")
    message = _error(tmp_path, "eyeq", "image,quality\na.png,good\n")
    assert message.endswith("line 2, column 'quality': expected an integer 0-2, got 'good'")
    message = _error(tmp_path, "refuge", "Filename,ExpCDR,Glaucoma\na.png,1.4,0\n")
    assert message.endswith("line 2, column 'ExpCDR': expected a number in [0, 1], got '1.4'")
    header = "image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable\n"
    message = _error(tmp_path, "messidor2", header + "a.png,1,maybe,1\n")
    assert message.endswith("line 2, column 'adjudicated_dme': expected 0 or 1, got 'maybe'")


def test_missing_image_names_the_line(tmp_path: Path) -> None:
    _image(tmp_path / "10_left.jpeg")
    message = _error(tmp_path, "eyepacs", "image,level\n10_left,0\n10_right,1\n")
    assert "bad.csv: line 3, column 'image': image '10_right' not found in" in message
    assert "10_right.jpeg" in message


def test_repeated_image_is_refused(tmp_path: Path) -> None:
    _image(tmp_path / "g1.jpg")
    message = _error(tmp_path, "refuge", "ImgName,Label\ng1.jpg,1\ng1.jpg,0\n")
    assert message.endswith(
        "line 3, column 'ImgName': image 'g1.jpg' is listed again (first on line 2)"
    )


def test_refuge_without_either_header_lists_both(tmp_path: Path) -> None:
    message = _error(tmp_path, "refuge", "name,glaucoma\nx,1\n")
    assert "REFUGE needs ImgName,Label; ORIGA needs Filename,ExpCDR,Glaucoma" in message


def test_empty_unknown_and_missing_inputs(tmp_path: Path) -> None:
    assert _error(tmp_path, "aptos", "").endswith("bad.csv: line 1: the file is empty (no header)")
    assert _error(tmp_path, "aptos", "id_code,diagnosis\n").endswith("bad.csv: no data rows")
    with pytest.raises(ValueError, match="unknown labels format 'kaggle'"):
        read_labels(tmp_path, None, "kaggle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no synth labels file found .*; pass labels"):
        read_labels(empty, None, "synth")
    with pytest.raises(ValueError, match="labels file not found"):
        read_labels(tmp_path, tmp_path / "nope.csv", "aptos")
    with pytest.raises(ValueError, match="data set folder not found"):
        read_labels(tmp_path / "nope", None, "aptos")


def test_the_only_csv_is_taken_when_the_usual_name_is_absent(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _write(tmp_path / "site-export.csv", "id_code,diagnosis\na,3\n")
    assert read_labels(tmp_path, None, "aptos")[0].dr_grade == 3


def test_optional_subgroup_columns_in_any_format(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    labels = _write(tmp_path / "l.csv", "id_code,diagnosis,camera,sex\na,1,Topcon,F\n")
    (row,) = read_labels(tmp_path, labels, "aptos")
    assert row.subgroups == {"camera": "Topcon", "sex": "F"}


def test_excel_export_with_bom_crlf_and_quoted_cells(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    labels = tmp_path / "l.csv"
    labels.write_bytes(
        b'\xef\xbb\xbfid_code,diagnosis,camera\r\na,2,"Topcon\r\nNW400"\r\nb,9,x\r\n'
    )
    with pytest.raises(ValueError, match=r"line 4, column 'diagnosis': .* got '9'"):
        read_labels(tmp_path, labels, "aptos")
    labels.write_bytes(b"\r\nid_code,diagnosis,camera\r\na,2,Caf\xe9\r\n")  # Windows-1252
    (row,) = read_labels(tmp_path, labels, "aptos")
    assert (row.dr_grade, row.subgroups) == (2, {"camera": "Café"})
