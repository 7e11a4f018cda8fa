"""Grid files and the Snakemake workflow's DAG (dry runs only: nothing is executed here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.data.registry import parse_combo
from melanoma.pipeline.grid import expand, groups, load_grid, run_id
from melanoma.train.params import ParamError

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def test_snakemake_is_installed():
    """A dependency (pyproject.toml): the workflow tests below run it, never skip it."""
    assert SNAKEMAKE.is_file(), f"{SNAKEMAKE} missing: `make venv` installs snakemake"


def test_paper_grid_is_1296_unique_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    g = load_grid(REPO / "params" / "paper.yaml")
    runs = expand(g)
    assert len(g.models) == 24 and len(g.combinations) == 54
    assert len(runs) == 1296 == len(set(runs))
    p = runs["densenet201__ABCDEGIJ"]
    assert p.freeze == "conv" and p.weights == "imagenet" and p.epochs is None
    assert p.n_epochs == 30 + 2 * 8
    assert set(p.eval_sets) == {"isic2017", "isic2018", "derm7pt", "kaggle", "isic2020"}


def test_paper_grid_needs_data_root(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(ParamError, match="DATA_ROOT"):
        load_grid(REPO / "params" / "paper.yaml")


def test_every_paper_combination_parses():
    lines = [l for l in (REPO / "params" / "paper_combinations.txt").read_text().splitlines() if l]
    for line in lines:
        assert parse_combo(line)


def test_run_ids_are_stable_and_readable():
    assert run_id("resnet50", parse_combo("A-C,I,J")) == "resnet50__ABCIJ"
    assert run_id("resnet50", parse_combo("HAM10000")) == "resnet50__HAM"
    assert run_id("vgg16", parse_combo("ISIC2016+HAM10000")) == "vgg16__A_HAM"


def test_demo_grid(tmp_path):
    g = load_grid(REPO / "params" / "demo.yaml")
    runs = expand(g)
    assert g.is_synthetic
    assert list(runs) == [  # models outer, combinations inner (model_overrides), then the leakage twin
        "efficientnet_lite0__E", "efficientnet_lite0__B", "efficientnet_lite0__D", "efficientnet_lite0__ABCIJ",
        "efficientnet_lite0__ABCDE", "efficientnet_lite0__ABCDEFGHIJ",
        "resnet18__E", "resnet18__B", "resnet18__ABCIJ", "resnet18__ABCDEFGHIJ",
        "meshnet_s4__ABCDEFGHIJ", "efficientnet_lite0__ABCDE__keep"]
    assert runs["efficientnet_lite0__ABCDE__keep"].leakage == "keep" and runs["efficientnet_lite0__ABCDE"].leakage == "drop"
    assert g.web["run"] in runs
    assert g.figures["calibration_single"] in runs and g.figures["calibration_combined"] in runs
    gs = groups(g, runs)  # the fast-path runs of a model train in one job; MeshNet (loop) alone
    assert sorted(len(ids) for ids in gs.values()) == [4, 6]
    assert not any(runs[r].model == "meshnet_s4" for ids in gs.values() for r in ids)


def test_bad_grid_files_are_clear(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("name: x\nmodels: [resnet18]\ncombinations: [A, Q]\neval_sets: [B]\n")
    with pytest.raises(ParamError, match="combination 'Q'"):
        load_grid(f)
    f.write_text("name: x\nmodels: [resnet18]\ncombinations: [A, ISIC2016]\neval_sets: [B]\n")
    with pytest.raises(ParamError, match="listed twice"):
        load_grid(f)
    f.write_text("name: x\nmodels: [resnet999]\ncombinations: [A]\neval_sets: [B]\n")
    with pytest.raises(ParamError, match="unknown model"):
        expand(load_grid(f))


def test_reject_grid_key_was_renamed_to_thresholds(tmp_path):
    """`reject: {grid: ...}` (the old name of the candidate thresholds) is an error naming the new
    key, at the top level and in a model override; `reject: {thresholds: ...}` is checked as
    START:STOP:STEP."""
    f = tmp_path / "g.yaml"
    base = "name: x\nmodels: [resnet18]\ncombinations: [A]\neval_sets: [B]\n"
    f.write_text(base + "reject: {mode: absolute, grid: '0:0.2:0.05'}\n")
    with pytest.raises(ParamError, match=re.escape("reject.grid was renamed to reject.thresholds")) as e:
        load_grid(f)
    assert "`thresholds: 0:0.2:0.05`" in str(e.value) and "unknown key" not in str(e.value)
    f.write_text(base + "model_overrides: {resnet18: {reject: {grid: auto}}}\n")
    with pytest.raises(ParamError, match=re.escape("model_overrides.resnet18.reject.grid was renamed to "
                                                   "model_overrides.resnet18.reject.thresholds")):
        load_grid(f)
    f.write_text(base + "reject: {mode: absolute, thresholds: '0:0.2:0.05'}\n")
    assert load_grid(f).reject == {"mode": "absolute", "thresholds": "0:0.2:0.05"}
    f.write_text(base + "reject: {thresholds: '0:x'}\n")
    with pytest.raises(ParamError, match=re.escape("reject.thresholds: thresholds must look like START:STOP:STEP")):
        load_grid(f)


def test_cli_grid_expand(tmp_path, capsys):
    from melanoma.cli import main

    g = tmp_path / "g.yaml"
    g.write_text(f"name: t\nmodels: [resnet18, meshnet]\ncombinations: [A, B-C]\neval_sets: [B]\n"
                 f"results: {tmp_path}/res\nwork: {tmp_path}/work\n")
    assert main(["grid", "expand", str(g)]) == 0
    ids = capsys.readouterr().out.split()
    assert ids == ["resnet18__A", "resnet18__BC", "meshnet__A", "meshnet__BC"]
    assert sorted(p.name for p in (tmp_path / "res" / "params").iterdir()) == sorted(f"{i}.yaml" for i in ids)


def test_snakemake_dry_run_paper_grid(tmp_path):
    """The full 1,296-run DAG builds against a fake data root without running anything."""
    env = dict(os.environ, DATA_ROOT=str(tmp_path / "data"), WORK=str(tmp_path / "work"),
               RESULTS=str(tmp_path / "results"))
    r = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "workflow" / "Snakefile"), "-n", "--quiet", "rules",
                        "--config", "grid=params/paper.yaml", "--cores", "1"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert any(line.split()[:2] == ["ingest", "11"] for line in out.splitlines()), out[-2000:]
    # calibrate and reject run inside each training job: one job per training job, not three per run
    assert not any(line.split()[:1] in (["calibrate"], ["reject"]) for line in out.splitlines())
    total = next(int(line.split()[1]) for line in out.splitlines() if line.split()[:1] == ["total"])
    assert any(line.split()[:2] == ["release_fingerprint", "11"] for line in out.splitlines()), out[-2000:]
    assert total == 216 + 11 + 11 + 4, out[-2000:]  # + fingerprints, report, export_web, book, all
    # `group: 6`: 24 models × 9 jobs of 6 combinations, one rule per job
    grouped = {tuple(line.split()) for line in out.splitlines() if line.startswith("train_")}
    assert len(grouped) == 216 and all(w[1] == "1" for w in grouped), out[-2000:]
    assert not any(line.split()[:1] == ["train"] for line in out.splitlines())  # no run trains alone
    assert not (tmp_path / "results" / "runs").exists()  # nothing ran


def _notebook_parameters(name: str) -> dict:
    """The defaults of a notebook's `parameters` cell."""
    import json

    nb = json.loads((REPO / "notebooks" / name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    ns: dict = {}
    exec("".join(cell["source"]), ns)
    return {k: v for k, v in ns.items() if not k.startswith("__")}


def test_training_jobs_pass_every_reject_setting_to_notebook_04(tmp_path):
    """The demo grid (grouped runs, runs alone, a leakage twin), with a model override: every run is
    calibrated and rejected once, inside its training job, and notebook 04 gets every rejection
    setting: the grid's and the override's where set, else the notebook's own defaults. And every
    job that is not local is of a kind the resume-on-a-cluster check lists (Snakefile
    slurm_comments: ingest, features, train, train_<group>, export_web): release_fingerprint runs
    in the head process."""
    import shlex

    import yaml

    g = yaml.safe_load((REPO / "params" / "demo.yaml").read_text())
    g.update(work=str(tmp_path / "work"), results=str(tmp_path / "results"))
    g["model_overrides"]["resnet18"]["reject"] = {"method": "sgr", "alpha": 0.2, "risk_target": 0.3}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(g))
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "WORK", "RESULTS")}
    r = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "workflow" / "Snakefile"), "-n", "-p",
                        "--config", f"grid={grid}", "--cores", "1", "--directory", str(tmp_path)],
                       cwd=REPO, env=dict(env, MELANOMA_BOOK=str(tmp_path / "book")),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    loaded = load_grid(grid)
    runs, grouped = expand(loaded), groups(loaded)
    assert any(len(ids) > 1 for ids in grouped.values())
    solo = [rid for rid in runs if not any(rid in ids for ids in grouped.values())]
    assert solo and any(rid.endswith("__keep") for rid in runs)

    steps: dict[tuple[str, str], list[dict]] = {}
    for line in out.splitlines():
        if " nbrun " not in line:
            continue
        toks = shlex.split(line)
        chunks, cur = [], []
        for t in toks:
            if t in ("--then", "&&"):
                chunks.append(cur)
                cur = []
            else:
                cur.append(t)
        chunks.append(cur)
        for c in chunks:
            if "nbrun" in c:
                c = c[c.index("nbrun") + 1:]
            if not c or not c[0].endswith(("03_calibrate.ipynb", "04_reject.ipynb")):
                continue
            ps = {c[i + 1]: c[i + 2] for i, t in enumerate(c) if t == "-p"}
            steps.setdefault((Path(ps["run_dir"]).name, Path(c[0]).name), []).append(ps)
    nb04 = _notebook_parameters("04_reject.ipynb")
    for rid, p in runs.items():
        assert len(steps.get((rid, "03_calibrate.ipynb"), [])) == 1, rid
        (ps,) = steps[(rid, "04_reject.ipynb")]
        want = {k: nb04[k] for k in ("mode", "thresholds", "min_coverage", "bootstrap", "method", "conformal_alpha",
                                     "risk_target", "risk_delta")}
        want.update(mode="relative", min_coverage=0.8, bootstrap=200)  # the demo grid's reject:
        if p.model == "resnet18":
            want.update(method="sgr", conformal_alpha=0.2, risk_target=0.3)
        assert want["thresholds"] == "auto" and want["risk_delta"] == 0.05  # the notebook's defaults
        assert {k: v for k, v in ps.items() if k != "run_dir"} == {k: str(v) for k, v in want.items()}, rid

    # (a dry run prints every job as "rule X:", so which are local is read from the Snakefile's
    # `localrules:` declaration; a cluster run checks the submitted kinds: tests/pipeline/test_slurm.py)
    jobs = {m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):$", out, re.M)}
    decl = re.search(r"^localrules: (.*)$", (REPO / "workflow" / "Snakefile").read_text(), re.M).group(1)
    local = {x.strip() for x in decl.split(",")}
    assert {"synth", "release_fingerprint", "report", "book", "all"} == local
    remote = jobs - local
    assert {"ingest", "features", "train"} <= remote
    assert {k for k in remote if not k.startswith("train_")} <= {"ingest", "features", "train", "export_web"}, remote


def test_groups_pack_resident_runs_of_one_model(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    g = load_grid(REPO / "params" / "paper.yaml")
    gs = groups(g)
    assert len(gs) == 24 * 9 and all(len(ids) == 6 for ids in gs.values())
    assert sorted(r for ids in gs.values() for r in ids) == sorted(expand(g))
    assert gs["resnet50__group1"][0].startswith("resnet50__")
    f = tmp_path / "g.yaml"
    f.write_text("name: t\nmodels: [resnet18, meshnet]\ncombinations: [E, B, A-C]\neval_sets: [ISIC2017]\n"
                 "train: {freeze: conv, loader: resident, weights: none}\ngroup: 2\n"
                 "model_overrides: {meshnet: {group: 1}}\n")
    gs = groups(load_grid(f, work=str(tmp_path / "w"), results=str(tmp_path / "r")))
    assert gs == {"resnet18__group1": ["resnet18__E", "resnet18__B"]}  # A-C alone; meshnet not grouped
    f.write_text(f.read_text().replace("group: 2", "group: 0"))
    with pytest.raises(ParamError, match="group for resnet18 must be an integer >= 1"):
        groups(load_grid(f, work=str(tmp_path / "w"), results=str(tmp_path / "r")))


def test_leakage_twins_and_data_dirs(tmp_path):
    g = load_grid(REPO / "params" / "realdata.yaml")
    runs = expand(g)
    assert list(runs)[-1] == "efficientnet_lite0__B__keep"
    twin, base = runs["efficientnet_lite0__B__keep"], runs["efficientnet_lite0__B"]
    assert twin.leakage == "keep" and base.leakage == "drop" and twin.train == base.train
    assert Path(twin.out).name == "efficientnet_lite0__B__keep"
    # data relative to the repository (not the current folder); data_dirs map a release to its folder
    assert Path(g.data) == (REPO / ".." / "shared" / "realdata").resolve() or Path(g.data) == REPO / "../shared/realdata"
    assert g.release_dir("mednode") == Path(g.data) / "MEDNODE"
    assert g.release_dir("ISIC2017") == Path(g.data) / "ISIC2017"
    # the work folder and results of real images live outside the repository
    assert not str(g.work.resolve()).startswith(str(REPO)) and not str(g.results.resolve()).startswith(str(REPO))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [efficientnet_lite0]\ncombinations: [B]\neval_sets: [ISIC2017]\n"
                   "leakage_keep: [efficientnet_lite0__C]\n")
    with pytest.raises(ParamError, match="leakage_keep names run"):
        load_grid(bad)
    bad.write_text("name: x\nmodels: [efficientnet_lite0]\ncombinations: [B]\neval_sets: [ISIC2017]\n"
                   "data: /data\ndata_dirs: {nowhere: x}\n")
    with pytest.raises(ParamError, match="data_dirs"):
        load_grid(bad)
