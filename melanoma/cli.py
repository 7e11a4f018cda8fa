"""The ``melanoma`` command. Each subcommand is a thin wrapper over one package function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence


def _print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 500):
        print(df.to_string(index=False))


# ----------------------------------------------------------------------------- subcommands

def cmd_synth(a) -> int:
    from melanoma.data.synthetic import write_replicas

    from melanoma.io import write_json

    summary = write_replicas(a.out, scale=a.scale, seed=a.seed)
    write_json(Path(a.out) / "replicas.json", summary)  # written last: the workflow's "done" flag
    print(f"SYNTHETIC replicas of {len(summary['counts'])} releases written to {a.out} "
          f"in {summary.get('seconds', float('nan')):.1f} s")
    return 0


def cmd_ingest(a) -> int:
    from melanoma.data.ingest import counts_table, ingest_all, ingest_dataset

    kw = dict(shorter=a.cache_size, seed=a.seed, strict=a.strict, workers=a.workers,
              progress=not a.quiet)
    if a.all:
        reports = ingest_all(a.root, a.out, skip_unknown=a.skip_unknown, **kw)
    else:
        if not a.dataset:
            raise SystemExit("melanoma ingest: give a DATASET (letter A–J or name) or --all")
        _, r = ingest_dataset(a.dataset, a.root, a.out, **kw)
        reports = {r["dataset"]: r}
    _print_table(counts_table(reports))
    for r in reports.values():
        for kind in ("missing", "bad", "unlisted", "outside_root", "duplicates", "bad_labels"):
            if r.get(f"n_{kind}"):
                print(f"{r['name']}: {r[f'n_{kind}']} {kind.replace('_', ' ')} (listed in "
                      f"{a.out}/{r['dataset']}/report.json)")
    if a.all:
        from melanoma.data.ingest import unknown_folders

        for u in unknown_folders(a.root):
            print(f"skipped {a.root}/{u['folder']}/: names no release"
                  + (f" (did you mean {u['suggestion']}/?)" if u["suggestion"] else ""))
    return 0


def cmd_leakage(a) -> int:
    from melanoma.data.combine import leakage_report
    from melanoma.data.registry import get
    from melanoma.io import write_parquet

    evals = [get(e).short for e in a.eval.split(",") if e]
    t = leakage_report(a.work, a.train, evals, policy=a.policy)
    _print_table(t)
    if a.out:
        write_parquet(a.out, t)
        print(f"written {a.out}")
    return 0


def cmd_summary(a) -> int:
    import json

    from melanoma.data.ingest import counts_table

    reports = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(a.work).glob("*/report.json"))}
    if not reports:
        raise SystemExit(f"no ingest reports under {a.work}; run `melanoma ingest` first")
    _print_table(counts_table(reports))
    return 0


def cmd_train(a) -> int:
    from melanoma.train.params import TrainParams
    from melanoma.train.recipe import train_run

    d = {"work": str(a.work), "model": a.model, "train": a.train, "eval_sets": a.eval, "out": str(a.out),
         "weights": a.weights, "freeze": a.freeze, "epochs": a.epochs, "image_size": a.image_size,
         "views": a.views, "seed": a.seed, "workers": a.workers, "device": a.device,
         "leakage": a.leakage, "select": a.select, "loader": a.loader, "solver": a.solver,
         "reg_grid": a.reg_grid}
    if a.fast is not None:
        d["fast"] = a.fast
    if a.params:
        from melanoma.train.params import load_mapping
        d = {**load_mapping(a.params, "a parameters file"), **{k: v for k, v in d.items() if v is not None}}
    d = {k: v for k, v in d.items() if v is not None}
    train_run(TrainParams.from_dict(d, where="melanoma train"), progress=not a.quiet)
    print(f"run written to {a.out}")
    return 0


def cmd_features(a) -> int:
    import os

    from melanoma.pipeline.gpus import claim_gpu
    from melanoma.train.features import features_for_dataset

    with claim_gpu() as gpu:  # several local GPUs: one per job
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        f = features_for_dataset(a.work, a.dataset, model=a.model, weights=a.weights, size=a.image_size,
                                 views=a.views, seed=a.seed, cache_size=a.cache_size, device=a.device,
                                 workers=a.workers, progress=not a.quiet)
    print(f"{f['model']} features of {f['dataset']}: {f['images_encoded']} images encoded in "
          f"{f['seconds']} s ({f['img_per_s']} img/s)")
    return 0


def cmd_grid(a) -> int:
    from melanoma.pipeline.grid import expand, find_grid_file, load_grid, write_run_params

    g = load_grid(find_grid_file(a.grid_file))
    runs = expand(g)
    if a.action == "expand":
        write_run_params(g)
        for rid in runs:
            print(rid)
    return 0


def _scalar(v: str):
    """A ``-p`` value: int, float, bool or None when it reads as one, else the string itself.
    (Not YAML: YAML 1.1 reads ``0:1:0.02`` as the base-60 number 60.02.)"""
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def cmd_nbrun(a) -> int:
    from melanoma.pipeline.nbrun import Step, run_steps
    from melanoma.train.params import load_mapping

    steps = []
    while a is not None:  # `--then NOTEBOOK OUTPUT ...`: the next step, parsed like the first
        params = dict(load_mapping(a.params_file, "a parameters file")) if a.params_file else {}
        for k, v in a.p or []:
            params[k] = _scalar(v)
        steps.append(Step(a.notebook, a.output, a.status, params, a.after or [], a.cwd))
        a = a.nbrun_parser.parse_args(a.then) if a.then else None
    for s, r in zip(steps, run_steps(steps)):
        print(f"{s.notebook} → {s.output}: {r['status']} ({r['seconds']} s){' — ' + r['error'] if r['error'] else ''}")
    return 0


def cmd_calibrate(a) -> int:
    from melanoma.evaluate.calibrate import calibrate_run
    from melanoma.evaluate.tables import calibrate_table

    r = calibrate_run(a.run_dir, n_bins=a.bins, B=a.bootstrap, seed=a.seed)
    _print_table(calibrate_table(r))
    print(f"written {Path(a.run_dir) / 'metrics.json'}{'  (SYNTHETIC data)' if r['synthetic'] else ''}")
    return 0


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _thresholds_arg(text: str):
    from melanoma.evaluate.reject import parse_thresholds

    try:
        return parse_thresholds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _old_thresholds_flag(text: str):
    raise argparse.ArgumentTypeError(
        f"the candidate thresholds are now --thresholds {text} (START:STOP:STEP); --grid names a "
        "grid file (params/demo.yaml) everywhere else")


def cmd_reject(a) -> int:
    from melanoma.evaluate.reject import reject_run
    from melanoma.evaluate.tables import methods_table, reject_table

    r = reject_run(a.run_dir, mode=a.mode, thresholds=a.thresholds, min_coverage=a.min_coverage,
                   temperature=a.temperature, base=a.base, B=a.bootstrap, seed=a.seed, method=a.method,
                   conformal_alpha=a.alpha, risk_target=a.risk_target, risk_delta=a.risk_delta)
    _print_table(reject_table(r))
    for es, e in r["eval_sets"].items():
        note = e.get("val_search", {}).get("note")
        if note and "skipped" not in e:
            print(f"{es}: {note}")
        if e.get("flags") and "skipped" not in e:
            print(f"{es}: FLAGGED ({', '.join(f['code'] for f in e['flags'])}): do not read 'after' at face value")
    _print_table(methods_table(r))
    print(f"written {Path(a.run_dir) / 'rejection.json'}{'  (SYNTHETIC data)' if r['synthetic'] else ''}")
    return 0


def cmd_report(a) -> int:
    from melanoma.pipeline.grid import find_grid_file
    from melanoma.report.summary import report

    report(find_grid_file(a.grid))
    return 0


def cmd_book(a) -> int:
    from melanoma.pipeline.grid import find_grid_file
    from melanoma.report.book import make_book

    make_book(find_grid_file(a.grid), strict=not a.no_strict)
    return 0


def cmd_serve(a) -> int:
    """Serve the built book on localhost (its web page needs http://, not file://) until Ctrl-C."""
    import functools
    import http.server

    from melanoma.home import book_dir

    root = Path(a.dir) if a.dir else book_dir() / "_build" / "html"
    if not (root / "index.html").is_file():
        print(f"no built book in {root}: build it first (`make demo`, or `melanoma book --grid GRID`), "
              "or pass --dir FOLDER", file=sys.stderr)
        return 2

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    try:
        httpd = http.server.ThreadingHTTPServer((a.host, a.port), functools.partial(Handler, directory=str(root)))
    except OSError as e:
        print(f"cannot serve on {a.host}:{a.port} ({e.strerror}); choose another port: --port 8001 "
              "(or --port 0 for any free one)", file=sys.stderr)
        return 2
    url = f"http://{a.host}:{httpd.server_address[1]}"
    print(f"serving {root}\n  the book:     {url}/index.html", flush=True)
    if (root / "webapp" / "index.html").is_file():
        print(f"  the web page: {url}/webapp/index.html", flush=True)
    print("Ctrl-C stops.", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def cmd_export(a) -> int:
    from melanoma.report.export import assemble_site, export_run

    m = export_run(a.run_dir, a.out, opset=a.opset)
    print(f"written {Path(a.out) / 'model.onnx'} ({m['onnx']['bytes'] / 1024:.0f} KB, parity "
          f"{m['parity']['max_abs_logit_diff']:.2g}) and model.json (threshold {m['threshold']:.3g} bits: "
          f"{m['threshold_source']}){'  (SYNTHETIC model)' if m['synthetic'] else ''}")
    if a.site:
        print(f"web page assembled in {assemble_site(a.site, a.out)}")
    return 0


def cmd_screenshot(a) -> int:
    """Fig. 2: the page scoring one image in headless Chromium. Without --image: the first
    melanoma of the evaluation set's test split in WORK (the synthetic replica in the demo)."""
    from melanoma.report.browser import CHROMIUM, first_test_melanoma, screenshot_checked

    image = a.image
    if image is None:
        if not a.work:
            raise SystemExit("melanoma screenshot: give --image or --work")
        image = first_test_melanoma(a.work, a.dataset)
    if not CHROMIUM.is_file():
        print(f"no screenshot: {CHROMIUM} is not installed (apt-get install -y chromium)")
        return 0 if a.optional else 2
    r = screenshot_checked(a.model_dir, image, a.out)
    print(f"screenshot {a.out}: p(melanoma) {r['p']:.3f}, entropy {r['entropy']:.3f} bits, "
          f"{'Uncertain' if r['uncertain'] else 'confident'}, {r['ms']:.1f} ms in the browser")
    return 0


def cmd_fingerprint(a) -> int:
    from melanoma.data.fingerprint import update_stamp

    fp = update_stamp(a.root, a.out)
    print(f"{a.root}: {fp['n_files']} files, {fp['bytes']} bytes, fingerprint {fp['sha256'][:16]} → {a.out}")
    return 0


def cmd_retry(a) -> int:
    from melanoma.pipeline.runner import retry

    done = retry(a.grid, a.run_ids, force=a.force, cores=a.cores)
    if not done:
        print("nothing to retry")
    return 0


def cmd_locked(a) -> int:
    from melanoma.pipeline.runner import run_locked

    cmd = a.command_[1:] if a.command_[:1] == ["--"] else a.command_
    return run_locked(a.grid, cmd, a.workdir)


def cmd_demo(a) -> int:
    """The embedded default, end to end."""
    from melanoma.pipeline.runner import run_demo

    run_demo(a.grid, cores=a.cores)
    return 0


# ----------------------------------------------------------------------------- parser

def _version() -> str:
    """``melanoma 0.1.0 (Python 3.11.7, torch 2.4.1+cu121)``; the installed distribution's version
    (the package's own when it is not installed)."""
    import platform
    from importlib import metadata

    from melanoma import __version__

    try:
        v = metadata.version("melanoma")
    except metadata.PackageNotFoundError:
        v = __version__
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    return f"melanoma {v} (Python {platform.python_version()}, torch {torch}); sources: {_sources()}"


class _Version(argparse.Action):
    """``--version`` printed as one line (argparse's own action wraps it at the terminal width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def _sources() -> str:
    from melanoma.home import repository, sources

    try:
        return f"{sources()}" + ("" if repository() else " (packaged)")
    except FileNotFoundError as e:
        return f"missing ({e})"


class Command(NamedTuple):
    """One subcommand: what runs it, its help line, its arguments (``arg(...)`` entries: what
    ``add_argument`` takes; ``default_factory=f`` makes the default ``f()`` when the parser is built)."""
    func: Callable[[argparse.Namespace], int]
    help: str
    parser_as: str | None = None  # set this default to the subcommand's own parser (nbrun --then)
    args: Sequence = ()


def arg(*flags, **kw) -> tuple[tuple, dict]:
    return flags, kw


COMMANDS: dict[str, Command] = {
    "synth": Command(
        cmd_synth, "write SYNTHETIC replicas of all 11 releases in their official layouts", args=[
        arg("--out", required=True, type=Path, help="folder to write DIR/<name>/ into"),
        arg("--scale", type=float, default=1.0, help="multiply every count (default 1.0)"),
        arg("--seed", type=int, default=0, help="random seed (default 0)"),
    ]),
    "ingest": Command(cmd_ingest, "parse a release, hash and cache its images, write its manifest", args=[
        arg("dataset", nargs="?", help="letter A–J, paper name (ISIC2017) or short name (isic2017)"),
        arg("--all", action="store_true", help="ingest every release found as ROOT/<name>/"),
        arg("--root", required=True, type=Path,
            help="folder holding the release's official top-level items (with --all: their parent)"),
        arg("--out", required=True, type=Path, help="work folder: WORK/<name>/manifest.parquet, cache"),
        arg("--cache-size", type=int, default=256, help="shorter side of cached images (default 256)"),
        arg("--seed", type=int, default=0, help="seed for the validation splits we make (default 0)"),
        arg("--strict", action="store_true",
            help="fail on an undecodable image, a path outside the release or an undecidable label "
                 "instead of reporting it"),
        arg("--skip-unknown", action="store_true",
            help="with --all: ingest the releases found and list folders that name none "
                 "(default: such a folder is an error)"),
        arg("--workers", type=int, default=None, help="decoding processes (default: CPU count)"),
        arg("--quiet", action="store_true", help="no progress bars"),
    ]),
    "leakage": Command(cmd_leakage, "duplicates between a training combination and evaluation sets", args=[
        arg("--work", required=True, type=Path, help="work folder made by `melanoma ingest`"),
        arg("--train", required=True, help="combination: 'A-D,I,J', 'ABCDIJ' or 'ISIC2016+ISIC2017'"),
        arg("--eval", required=True, help="comma list of evaluation sets (e.g. B,C,F,J)"),
        arg("--policy", choices=["drop", "keep"], default="drop",
            help="drop duplicates from training (default) or keep them (report only)"),
        arg("--out", type=Path, default=None, help="also write the table as parquet"),
    ]),
    "train": Command(cmd_train, "train one model on one combination; score the evaluation sets", args=[
        arg("--work", required=True, type=Path, help="work folder made by `melanoma ingest`"),
        arg("--model", default=None, help="model name (see params/models.yaml); default efficientnet_lite0"),
        arg("--train", default=None, help="training combination: 'A-D,I,J', 'ABCDIJ', 'ISIC2016+ISIC2017'"),
        arg("--eval", default=None, help="comma list of evaluation sets whose val/test splits are scored"),
        arg("--out", required=True, type=Path, help="run directory"),
        arg("--weights", choices=["imagenet", "none"], default=None, help="default imagenet"),
        arg("--freeze", choices=["conv", "backbone", "none"], default=None,
            help="conv: the paper's text; backbone: linear probe (fast path); none: full fine-tuning"),
        arg("--epochs", type=int, default=None,
            help="default: the paper's schedule (30 + 2 per extra dataset)"),
        arg("--image-size", type=int, default=None, help="crop size (default 224)"),
        arg("--views", type=int, default=None,
            help="fast path: augmented views per training image (default 0)"),
        arg("--loader", choices=["dataloader", "resident"], default=None,
            help="loop path's data: per-image ops on CPU workers (default) or images in device memory"),
        arg("--seed", type=int, default=None),
        arg("--fast", dest="fast", action="store_true", default=None, help="force the feature-cache path"),
        arg("--no-fast", dest="fast", action="store_false", help="force the loop path"),
        arg("--select", choices=["val_loss", "val_accuracy", "val_auc"], default=None,
            help="checkpoint selection metric (default val_loss; the paper: val_accuracy)"),
        arg("--leakage", choices=["drop", "keep"], default=None, help="default drop"),
        arg("--solver", choices=["lbfgs", "sgd"], default=None,
            help="head solver: lbfgs (fast path default: logistic regression, C chosen on validation) | "
                 "sgd (the paper's SGD + StepLR; the loop path's only solver)"),
        arg("--reg-grid", type=_float_list, default=None, metavar="C1,C2,...",
            help="lbfgs: candidates for C, the inverse L2 strength (default 1e-5 … 1e2, half decades)"),
        arg("--workers", type=int, default=None, help="DataLoader workers (default 0)"),
        arg("--device", default=None, help="auto | cpu | cuda | cuda:N | mps"),
        arg("--params", type=Path, default=None, help="a YAML of parameters; flags override it"),
        arg("--quiet", action="store_true"),
    ]),
    "features": Command(
        cmd_features, "cache one model's backbone features for one dataset (fast path)", args=[
        arg("--work", required=True, type=Path),
        arg("--dataset", required=True, help="letter, paper name or short name"),
        arg("--model", required=True),
        arg("--weights", choices=["imagenet", "none"], default="imagenet"),
        arg("--image-size", type=int, default=224),
        arg("--views", type=int, default=0, help="augmented views of each training image"),
        arg("--seed", type=int, default=0),
        arg("--cache-size", type=int, default=256),
        arg("--device", default="auto"),
        arg("--workers", type=int, default=0),
        arg("--quiet", action="store_true"),
    ]),
    "grid": Command(cmd_grid, "grid files: `melanoma grid expand params/demo.yaml` lists run ids", args=[
        arg("action", choices=["expand"], help="expand: print one run id per line, write params files"),
        arg("grid_file", type=Path, help="a grid file (params/demo.yaml, params/paper.yaml)"),
    ]),
    "nbrun": Command(
        cmd_nbrun, "run a notebook with papermill for the workflow; record ok/failed in a status file", parser_as="nbrun_parser", args=[
        arg("notebook", type=Path),
        arg("output", type=Path, help="the executed notebook (kept, errors included)"),
        arg("--status", required=True, type=Path, nargs="+",
            help="status JSON written atomically (several: each gets the same record)"),
        arg("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a parameter (string)"),
        arg("--params-file", type=Path, default=None, help="YAML of parameters"),
        arg("--after", nargs="*", type=Path, help="status files that must be ok, else this step is skipped"),
        arg("--cwd", type=Path, default=None, help="working folder of the kernel (default: the notebook's)"),
        arg("--then", nargs=argparse.REMAINDER, default=None, metavar="NOTEBOOK OUTPUT ...",
            help="another step after this one, with the same arguments (repeatable); the steps "
                 "of one call share one kernel, its namespace reset before each step"),
    ]),
    "calibrate": Command(
        cmd_calibrate, "metrics with bootstrap CIs, reliability data, temperature scaling → RUN_DIR/metrics.json", args=[
        arg("run_dir", type=Path, help="a finished run directory (run.json + predictions.parquet)"),
        arg("--bins", type=int, default=10,
            help="equal-width bins of ECE / reliability diagram (default 10)"),
        arg("--bootstrap", type=int, default=1000, help="bootstrap resamples B (default 1000)"),
        arg("--seed", type=int, default=0, help="bootstrap seed (default 0)"),
    ]),
    "reject": Command(
        cmd_reject, "entropy threshold chosen on validation, applied to test → RUN_DIR/rejection.json", args=[
        arg("run_dir", type=Path, help="a finished run directory (run.json + predictions.parquet)"),
        arg("--mode", choices=["relative", "absolute", "coverage"], default="relative",
            help="relative (default, the seed code): the threshold is the validation entropy quantile "
                 "rejecting a fraction r, applied to test as an entropy; absolute: the thresholds are entropies "
                 "in bits (the paper's text); coverage: reject the most uncertain fraction of each split"),
        arg("--thresholds", type=_thresholds_arg, default=None, metavar="START:STOP:STEP",
            help="candidates, STOP included (default: fractions 0.05:0.2:0.01 for relative/coverage, "
                 "bits 0:0.2:0.01 for absolute)"),
        arg("--grid", type=_old_thresholds_flag, default=None, help=argparse.SUPPRESS),
        arg("--min-coverage", type=float, default=0.8,
            help="smallest validation coverage a candidate must keep (default 0.8: the paper rejects up to 20%%)"),
        arg("--temperature", action="store_true",
            help="make the temperature-scaled variant (T fitted on val) the primary result; both are "
                 "always computed and reported side by side"),
        arg("--base", type=float, default=2, help="entropy base (default 2: bits)"),
        arg("--method", choices=["entropy", "conformal", "sgr"], default="entropy",
            help="the primary rule (all three are always reported side by side): entropy (the paper), "
                 "conformal (class-conditional sets; confident = one class in the set), sgr (selective "
                 "guaranteed risk)"),
        arg("--alpha", type=float, default=0.1,
            help="conformal: at most this fraction of each class (melanomas included) misses its label "
                 "(default 0.1)"),
        arg("--risk-target", type=float, default=0.2,
            help="sgr: bound on the error among the retained (default 0.2)"),
        arg("--risk-delta", type=float, default=0.05,
            help="sgr: probability the bound may fail (default 0.05)"),
        arg("--bootstrap", type=int, default=1000, help="bootstrap resamples B (default 1000)"),
        arg("--seed", type=int, default=0, help="bootstrap seed (default 0)"),
    ]),
    "report": Command(
        cmd_report, "aggregate a grid's runs into summary.parquet (+ SIIM-ISIC submissions)", args=[
        arg("--grid", "--grid-file", dest="grid", required=True,
            help="grid file (params/demo.yaml) or its results folder (results/demo)"),
    ]),
    "book": Command(cmd_book, "render a grid's tables/figures into book/_generated and build the book", args=[
        arg("--grid", "--grid-file", dest="grid", required=True, help="grid file or its results folder"),
        arg("--no-strict", action="store_true", help="do not pass -W -n --keep-going to jupyter-book"),
    ]),
    "serve": Command(cmd_serve, "serve the built book on localhost and print its address (the web page "
                                "needs http://, not file://)", args=[
        arg("--dir", default=None, help="folder to serve (default: the book's _build/html)"),
        arg("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)"),
        arg("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"),
    ]),
    "export": Command(cmd_export, "a run's model → DIR/model.onnx + DIR/model.json for the web page", args=[
        arg("run_dir", type=Path, help="a finished run directory (params.yaml, model.pt, run.json)"),
        arg("--out", required=True, type=Path, help="folder for model.onnx and model.json"),
        arg("--opset", type=int, default=17, help="ONNX opset (default 17)"),
        arg("--site", type=Path, default=None,
            help="also assemble the static web page (page + onnxruntime-web + model) into this folder"),
    ]),
    "screenshot": Command(
        cmd_screenshot, "the web page scoring one image in headless Chromium (Fig. 2)", args=[
        arg("model_dir", type=Path, help="a folder made by `melanoma export` (model.onnx, model.json)"),
        arg("--out", required=True, type=Path, help="PNG to write"),
        arg("--image", type=Path, default=None, help="image to score"),
        arg("--work", type=Path, default=None, help="or: pick the first test melanoma of --dataset in WORK"),
        arg("--dataset", default="isic2017", help="with --work (default isic2017)"),
        arg("--optional", action="store_true", help="exit 0 with a note when Chromium is missing"),
    ]),
    "summary": Command(cmd_summary, "print per-dataset counts of an ingested work folder", args=[
        arg("--work", required=True, type=Path),
    ]),
    "fingerprint": Command(cmd_fingerprint, "write a release folder's fingerprint (paths, sizes, mtimes) "
                 "if it changed; the workflow's ingest depends on it", args=[
        arg("--root", required=True, type=Path, help="the release folder (DATA/<name>)"),
        arg("--out", required=True, type=Path, help="the stamp file (WORK/<name>/release.json)"),
    ]),
    "retry": Command(
        cmd_retry, "rerun failed runs of a grid, and everything after them (report, book)", args=[
        arg("run_ids", nargs="+", metavar="RUN_ID", help="run ids (`melanoma grid expand GRID` lists them)"),
        arg("--grid", required=True, help="the grid file the runs belong to (params/demo.yaml)"),
        arg("--force", action="store_true", help="retry runs that did not fail too (retrains them)"),
        arg("--cores", type=int, default=None, help="parallel jobs (default: all cores)"),
    ]),
    "locked": Command(cmd_locked, "run a Snakemake command of a grid under the grid's run lock "
                 "(one writer per grid; `make slurm-demo` runs its Snakemake so)", args=[
        arg("--grid", required=True,
            help="the grid file the command runs (its results folder holds the lock)"),
        arg("--workdir", type=Path, default_factory=Path.cwd,
            help="Snakemake's working directory (its --directory; default: here): a killed run's "
                 "Snakemake lock there is removed first, unless a live Snakemake that takes locks works there"),
        arg("command_", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE ...",
            help="the command (it also gets --unlock --quiet appended for the unlock)"),
    ]),
    "demo": Command(cmd_demo, "a grid from nothing to the built book (default: the synthetic demo)", args=[
        arg("--grid", default="params/demo.yaml", help="grid file (default params/demo.yaml)"),
        arg("--cores", type=int, default=None, help="parallel jobs (default: all cores)"),
    ]),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``melanoma`` command line, built from :data:`COMMANDS`."""
    p = argparse.ArgumentParser(prog="melanoma", description="Melanoma detection with uncertainty "
                                "quantification: ingest, train, calibrate, reject, report.")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version, Python, torch and where "
                   "the sources are, and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        s = sub.add_parser(name, help=c.help)
        for flags, kw in c.args:
            kw = dict(kw)
            if "default_factory" in kw:
                kw["default"] = kw.pop("default_factory")()
            s.add_argument(*flags, **kw)
        s.set_defaults(func=c.func, **({c.parser_as: s} if c.parser_as else {}))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"melanoma {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, read-only file system: no traceback
        import errno

        hint = {errno.ENOSPC: "the disk is full: free space (or use another --out/work folder) and rerun",
                errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied"}.get(e.errno, "")
        print(f"melanoma {args.command}: error: {e}{'; ' + hint if hint else ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
