"""Regenerate data, train, export, quantize, card and validate every shipped model.

    python models/recipe/build.py                     # the full recipe (`make models`)
    python models/recipe/build.py --only gradability  # retrain one model, leave the others
    python models/recipe/build.py --quick             # a small smoke run of every step

Runs on CPU. Writes models/<task>.fp32.onnx, models/<task>.int8.onnx, models/<task>.card.json
and models/validation/ (the held-out report). Working data goes to var/recipe/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import nets  # noqa: E402
import train  # noqa: E402

from appliance.inference.card import DISCLAIMER, sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAMES = {
    "gradability": "retina-gradability-demo",
    "dr": "retina-dr-demo",
    "glaucoma": "retina-glaucoma-demo",
}
VERSION = "0.1.0"
SEEDS = {"train": 1001, "val": 2002, "test": 3003, "defects": 1501}
EPOCHS = {"gradability": 12, "dr": 8, "glaucoma": 8}
# Models whose first convolution stays FP32 in the INT8 file: quantizing the normalised input
# of gradability's full-resolution stem cost 1 % INT8/FP32 decision agreement (98.5 -> 99.5 %).
FP32_FIRST_CONV = {"gradability"}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# -- thresholds ----------------------------------------------------------------------------
def threshold_for_sensitivity(scores: np.ndarray, truth: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity on this split is at least ``target``."""
    positives = np.sort(scores[truth == 1])
    if len(positives) == 0:
        return 0.5
    index = int(np.floor((1 - target) * len(positives)))
    return float(max(positives[min(index, len(positives) - 1)] - 1e-6, 1e-6))


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    best, best_t = -1.0, 0.5
    for t in np.unique(scores):
        sens = float(np.mean(scores[truth == 1] >= t)) if np.any(truth == 1) else 0.0
        spec = float(np.mean(scores[truth == 0] < t)) if np.any(truth == 0) else 0.0
        if sens + spec - 1 > best:
            best, best_t = sens + spec - 1, float(t)
    return best_t


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def choose_thresholds(task: str, outputs: list[np.ndarray], y: dict[str, np.ndarray]) -> dict:
    n_val = len(next(iter(y.values())))
    where = f"validation split (generator seed {SEEDS['val']}, n={n_val})"
    if task == "gradability":
        logits = outputs[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        p_gradable = 1 - (probs / probs.sum(1, keepdims=True))[:, 2]
        t = youden_threshold(p_gradable, y["gradable"])
        return {"gradable": {"value": t, "chosen_at": f"max Youden J on the {where}"}}
    if task == "dr":
        t_ref = threshold_for_sensitivity(sigmoid(outputs[1][:, 0]), y["referable_dr"], 0.975)
        t_dme = threshold_for_sensitivity(sigmoid(outputs[2][:, 0]), y["dme"], 0.95)
        return {
            "referable": {
                "value": t_ref,
                "chosen_at": f"sensitivity >= 0.975 on the gradable {where}",
            },
            "dme": {"value": t_dme, "chosen_at": f"sensitivity >= 0.95 on the gradable {where}"},
        }
    t = threshold_for_sensitivity(sigmoid(outputs[1][:, 0]), y["glaucoma_suspect"], 0.95)
    return {"suspect": {"value": t, "chosen_at": f"sensitivity >= 0.95 on the gradable {where}"}}


# -- export and quantization ---------------------------------------------------------------
class Reader(CalibrationDataReader):
    def __init__(self, tensors: np.ndarray) -> None:
        self.items = iter([{"image": t[None]} for t in tensors])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def export(
    task: str, model: torch.nn.Module, calibration: np.ndarray, out: Path
) -> dict[str, Path]:
    size = nets.SPECS[task]["input"]["size"]
    fp32 = out / f"{task}.fp32.onnx"
    int8 = out / f"{task}.int8.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        str(fp32),
        input_names=["image"],
        output_names=nets.output_names(task),
        dynamic_axes={"image": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    quantize(task, fp32, calibration, int8)
    return {"fp32": fp32, "int8": int8}


def quantize(task: str, fp32: Path, calibration: np.ndarray, int8: Path) -> None:
    """Static INT8 (QDQ, per-channel) of ``fp32``; see :data:`FP32_FIRST_CONV`."""
    work = int8.with_name(f".{task}.pre.onnx")
    exclude: list[str] = []
    if task in FP32_FIRST_CONV:
        graph = onnx.load(str(fp32)).graph
        exclude = [next(node.name for node in graph.node if node.op_type == "Conv")]
    quant_pre_process(str(fp32), str(work))
    quantize_static(
        str(work),
        str(int8),
        Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        nodes_to_exclude=exclude,
    )
    work.unlink()


def run_onnx(path: Path, tensors: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outs = [session.run(None, {"image": t[None]}) for t in tensors]
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def decisions(task: str, outputs: list[np.ndarray], thresholds: dict) -> np.ndarray:
    if task == "gradability":
        logits = outputs[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        return (1 - (probs / probs.sum(1, keepdims=True))[:, 2]) >= thresholds["gradable"]["value"]
    if task == "dr":
        return sigmoid(outputs[1][:, 0]) >= thresholds["referable"]["value"]
    return sigmoid(outputs[1][:, 0]) >= thresholds["suspect"]["value"]


# -- the recipe ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "recipe")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument(
        "--n-defects",
        type=int,
        default=2000,
        help=f"extra gradability training images, each with a defect (seed {SEEDS['defects']})",
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"override {EPOCHS}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--tasks",
        "--only",
        default="gradability,dr,glaucoma",
        help="models to retrain (comma-separated); the others' files and cards are not touched",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks every step runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val, args.n_test, args.epochs = 96, 48, 48, 1
        args.n_defects = 48
        args.work = args.work.with_name(args.work.name + "-quick")
    epochs = {task: args.epochs or EPOCHS[task] for task in EPOCHS}
    torch.set_num_threads(args.workers)
    started = time.perf_counter()
    tasks = [task for task in args.tasks.split(",") if task]
    unknown = sorted(set(tasks) - set(nets.SPECS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {sorted(nets.SPECS)}")
    specs = {task: nets.SPECS[task]["input"] for task in tasks}
    splits = {}
    for split in ("train", "val", "test"):
        n = getattr(args, f"n_{split}")
        log(f"generating {split}: {n} images (seed {SEEDS[split]})")
        folder = data.generate(args.work / split, n, SEEDS[split], args.workers)
        rows = data.read_rows(folder)
        y = data.labels(rows)
        y["severity"] = data.severity(y["defect"], data.strengths(rows, SEEDS[split]))
        splits[split] = (folder, data.crops(folder, specs, args.workers), y)
    if "gradability" in tasks and args.n_defects > 0:
        log(
            f"generating the gradability supplement: {args.n_defects} images with a defect "
            f"(seed {SEEDS['defects']})"
        )
        folder = data.generate_defects(
            args.work / "train-defects", args.n_defects, SEEDS["defects"], args.workers
        )
        rows = data.read_rows(folder)
        y = data.labels(rows)
        y["severity"] = data.severity(y["defect"], data.strengths(rows, SEEDS["defects"]))
        grad_spec = {"gradability": specs["gradability"]}
        splits["defects"] = (folder, data.crops(folder, grad_spec, args.workers), y)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        _, train_crops, y_train = splits["train"]
        _, val_crops, y_val = splits["val"]
        n_supplement = 0
        if task == "gradability" and "defects" in splits:
            _, extra_crops, y_extra = splits["defects"]
            n_supplement = len(extra_crops["gradability"])
            train_crops = {task: np.concatenate([train_crops[task], extra_crops[task]])}
            y_train = {k: np.concatenate([v, y_extra[k]]) for k, v in y_train.items()}
        keep = (
            np.ones(len(y_train["quality"]), bool)
            if task == "gradability"
            else y_train["gradable"] == 1
        )
        keep_val = (
            np.ones(len(y_val["quality"]), bool)
            if task == "gradability"
            else y_val["gradable"] == 1
        )
        log(f"training {task} on {int(keep.sum())} images")
        model = train.train(
            task,
            train_crops[task][keep],
            {k: v[keep] for k, v in y_train.items()},
            epochs[task],
            seed=7,
            log=log,
        )
        val_out = train.predict(model, val_crops[task][keep_val])
        thresholds = choose_thresholds(task, val_out, {k: v[keep_val] for k, v in y_val.items()})
        rng = np.random.default_rng(11)
        # calibration crops come from the generator-mix training split only
        keep_calib = keep.copy()
        keep_calib[len(keep) - n_supplement :] = False
        calib_idx = rng.choice(
            np.flatnonzero(keep_calib), size=min(200, int(keep_calib.sum())), replace=False
        )
        calibration = train.to_batch(train_crops[task][calib_idx], False, rng).numpy()
        files = export(task, model, calibration, args.out)
        val_tensors = train.to_batch(val_crops[task][keep_val], False, rng).numpy()
        fp32_out = run_onnx(files["fp32"], val_tensors)
        int8_out = run_onnx(files["int8"], val_tensors)
        agreement = float(
            np.mean(decisions(task, fp32_out, thresholds) == decisions(task, int8_out, thresholds))
        )
        log(
            f"{task}: INT8/FP32 decision agreement {agreement:.4f} "
            f"on {len(val_tensors)} validation images"
        )
        write_card(
            task,
            files,
            thresholds,
            agreement,
            len(val_tensors),
            args,
            int(keep.sum()),
            args.out,
            n_supplement,
        )
    if "dr" in tasks and not args.quick:
        log("building the out-of-domain reference from the validation split")
        from appliance.tools.domain_reference import main as domain_reference

        domain = args.out / "domain.json"
        domain_reference(["--out", str(domain), "--max-side", str(data.MAX_SIDE)])
        name_domain(args.out, domain)
    log(f"done in {time.perf_counter() - started:.0f} s")
    if not args.quick:
        from validate_models import validate_shipped

        validate_shipped(splits["test"][0], args.out, tasks)
    return 0


# What `appliance cameras qualify` asks of a camera's own labelled photographs (DR card only).
ACCEPTANCE = {
    "referable_dr_sensitivity": 0.95,
    "referable_dr_specificity": 0.9,
    "minimum_referable": 30,
    "minimum_non_referable": 30,
    "use": "A camera model is qualified for automated screening (appliance cameras qualify) "
    "when `appliance validate` on that camera's own labelled photographs reaches these point "
    "estimates on at least these numbers of referable and non-referable gradable photographs.",
}


def name_domain(out: Path, domain: Path) -> None:
    """Name the out-of-domain reference, with its SHA-256, in the DR card (the screener refuses
    a reference whose hash differs)."""
    path = out / "dr.card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    card["domain"] = {"path": domain.name, "sha256": sha256_file(domain)}
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_card(
    task: str,
    files: dict[str, Path],
    thresholds: dict,
    agreement: float,
    n_agree: int,
    args,
    n_train: int,
    out: Path,
    n_supplement: int = 0,
) -> None:
    spec = nets.SPECS[task]
    card_input = {
        **spec["input"],
        "colour_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "scale": "1/255",
        "mean": train.MEAN,
        "std": train.STD,
        "preprocessing": "appliance.inference.preprocess.prepare",
    }
    outputs = {
        "gradability": {"quality_logits": {"labels": ["good", "usable", "reject"]}},
        "dr": {
            "grade_logits": {
                "labels": [
                    "no apparent DR",
                    "mild NPDR",
                    "moderate NPDR",
                    "severe NPDR",
                    "proliferative DR",
                ]
            },
            "referable_logit": {"meaning": "moderate NPDR or worse, or DME"},
            "dme_logit": {"meaning": "diabetic macular edema"},
            "cam": {"meaning": "class-activation map of the referable head, coarse"},
        },
        "glaucoma": {
            "cdr": {"meaning": "vertical cup-to-disc ratio, 0-1"},
            "suspect_logit": {"meaning": "glaucoma suspect: CDR >= 0.6 or rim notch"},
        },
    }[task]
    training = {
        "data": "appliance.synth procedural fundus generator (see docs/synth/README.md)",
        "generator_seed": SEEDS["train"],
        "images": n_train,
        "image_size": f"each camera profile's frame shape, longer side {data.MAX_SIDE // 2}-"
        f"{data.MAX_SIDE} px (smaller native frames kept)",
        "appearance": "per-photograph look: white balance red to brown to yellow, tone curve, "
        "small-pupil vignette, eyelash shadows, flash reflections, young-retina sheen, grey "
        "noisy surround (appliance/synth/look.py)",
        "epochs": EPOCHS[task] if args.epochs is None else args.epochs,
        "framework": f"PyTorch {torch.__version__} (CPU)",
        "recipe": "models/recipe/build.py",
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if task == "gradability":
        training.update(
            {
                "images_by_source": {  # "images" stays the total (the admin page shows it)
                    "generator_mix": n_train - n_supplement,
                    "defect_supplement": n_supplement,
                },
                "defect_supplement": {
                    "generator_seed": SEEDS["defects"],
                    "what": "the generator's own cases with an acquisition defect forced: kind "
                    "uniform over the six, strength drawn from the generator's good/usable/"
                    "reject band mix (models/recipe/data.py generate_defects)",
                },
                "labels": "quality = appliance.synth.gradability.quality_of(defect, nominal "
                "strength), the same rule as the validation and test sets",
                "auxiliary_heads": "training only, dropped at export: defect kind (7-way) and "
                "strength relative to the kind's reject level (smooth L1)",
                "augmentation": "horizontal and vertical flips; no brightness gain (it would "
                "move too_dark / too_bright pictures across their label)",
                "input_crop": "frame: a square centred on the frame centre, half-side the field "
                "radius (a centred field gives the field crop); the gate's off_center is the field "
                "centre's distance from the frame centre, which a field-centred crop removes (an "
                "off-centre reject scored p_gradable 0.999 and cost seed 918273 0.021 AUROC)",
            }
        )
    card = {
        "name": NAMES[task],
        "version": VERSION,
        "task": task,
        "disclaimer": DISCLAIMER,
        "files": {
            variant: {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
            for variant, path in files.items()
        },
        "input": card_input,
        "outputs": outputs,
        "thresholds": thresholds,
        "architecture": f"plain CNN, 3x3 conv+BN+ReLU stages {list(spec['widths'])}, "
        "global average pool, linear heads; "
        "no depthwise convolutions (they lose accuracy under static INT8 on CPUs without VNNI)",
        "quantization": "onnxruntime static INT8, QDQ, per-channel weights (QInt8), "
        "QUInt8 activations, "
        "MinMax calibration on 200 training crops"
        + ("; first convolution kept in FP32" if task in FP32_FIRST_CONV else "")
        + "; FP32 kept as fallback",
        "int8_fp32_agreement": {
            "decision_agreement": round(agreement, 4),
            "n": n_agree,
            "split": "validation",
        },
        "training": training,
        "intended_use": "Demonstrating the appliance's screening pipeline end to end. "
        "Not for patient care.",
        "limitations": [
            "Trained and tested only on synthetic images; "
            "performance on real photographs is unknown.",
            "The generator's lesions, discs and camera artefacts are simplified stand-ins "
            "for real pathology.",
            "A site must validate its own clinically validated model with "
            "`appliance validate` before use.",
        ],
        "validation": None,
    }
    if task == "dr":
        card["acceptance"] = ACCEPTANCE
    (out / f"{task}.card.json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    raise SystemExit(main())
