"""The web page in a real headless Chromium: offline scoring, exact preprocessing, no network.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and PyPI ``playwright`` (never
``playwright install``: the browser comes from Debian). Skipped, with the reason, when
``/usr/bin/chromium`` is absent. The screenshot of the page after scoring an image (the book's
Fig. 2) goes to ``$MELANOMA_SCREENSHOT`` when set.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.report import browser as web
from melanoma.report.browser import CHROMIUM
from melanoma.report.export import assemble_site
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "isic_webapp_samples"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="/usr/bin/chromium absent (install: apt-get install -y chromium)")


# ----------------------------------------------------------------------------- the reference in Python

def python_tensor(path: Path, pre: dict) -> np.ndarray:
    """What the training pipeline feeds the network for this file: decode → cache → eval transform."""
    from melanoma.data.images import open_image, resize_shorter
    from melanoma.train.transforms import eval_transform

    rgb = resize_shorter(open_image(path), pre["cache_shorter"])
    return eval_transform(pre["crop"], pre["resize"], mean=pre["mean"], std=pre["std"])(rgb).numpy()[None]


def python_rgb_tensor(rgb: np.ndarray, pre: dict) -> np.ndarray:
    from melanoma.data.images import resize_shorter
    from melanoma.train.transforms import eval_transform

    rgb = resize_shorter(rgb, pre["cache_shorter"])
    return eval_transform(pre["crop"], pre["resize"], mean=pre["mean"], std=pre["std"])(rgb).numpy()[None]


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


class Scorer:
    """onnxruntime in Python on a given input tensor."""

    def __init__(self, onnx_path: Path):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> tuple[float, float]:
        logits = self.sess.run(None, {"input": x.astype(np.float32)})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        return float(probs[1]), entropy_bits(probs)


# ----------------------------------------------------------------------------- test images

def _lesion(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth skin-coloured background with a dark blob and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    skin = rng.uniform(150, 230, 3)
    lesion = rng.uniform(20, 120, 3)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    r = rng.uniform(0.1, 0.35) * min(h, w)
    wgt = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    img = skin * (1 - wgt) + lesion * wgt + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    d = tmp_path_factory.mktemp("images")
    good = []
    # (h, w): landscape, portrait, tall (Pillow's vertical-first pass), large (PIL's reduce step),
    # small (upscaled), exactly the cache size
    for k, (h, w) in enumerate([(300, 400), (500, 333), (1400, 420), (1700, 1600), (40, 57), (256, 256)]):
        p = d / f"lesion_{k}_{w}x{h}.png"
        Image.fromarray(_lesion(h, w, k)).save(p)
        good.append(p)
    rng = np.random.default_rng(7)
    p = d / "noise_250x300.png"
    Image.fromarray(rng.integers(0, 256, (300, 250, 3), dtype=np.uint8)).save(p)
    good.append(p)
    jpegs = []
    for k, (h, w) in enumerate([(480, 640), (900, 700)]):
        p = d / f"photo_{k}_{w}x{h}.jpg"
        Image.fromarray(_lesion(h, w, 20 + k)).save(p, quality=90)
        jpegs.append(p)
    p = d / "phone_exif_rotated.jpg"          # EXIF orientation 6: both sides must turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_lesion(300, 520, 30)).save(p, quality=92, exif=exif)
    jpegs.append(p)
    bad = {}
    bad["not-an-image"] = d / "notes.txt"
    bad["not-an-image"].write_text("this is not an image\n")
    bad["fake-jpeg"] = d / "fake.jpg"
    bad["fake-jpeg"].write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG " * 10)
    bad["empty"] = d / "empty.png"
    bad["empty"].write_bytes(b"")
    bad["too-small"] = d / "tiny_10x12.png"
    Image.fromarray(_lesion(12, 10, 3)).save(bad["too-small"])
    bad["too-large-pixels"] = d / "huge_8000x5600.png"   # 44.8 MP, a small file (1 bit per pixel)
    Image.new("1", (8000, 5600), 1).save(bad["too-large-pixels"])
    bad["too-large-file"] = d / "big_31MB.jpg"
    with open(bad["too-large-file"], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + os.urandom(31 * 1024 * 1024))
    real = sorted(SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []
    return {"png": good, "jpeg": jpegs, "bad": bad, "real": real}


# ----------------------------------------------------------------------------- site, server, browser

def _sharpened_run(run: Path, dst: Path, images: list[Path], pre: dict, onnx_path: Path) -> Path:
    """A copy of ``run`` whose head spreads the test images' p(melanoma) over (0.05, 0.95).

    The 1-epoch test model gives every image p ≈ 0.5 (entropy ≈ 0.9999): too close together to
    test the Uncertain flag with a margin. Its head is recentred and scaled (logit difference
    d → K·(d − median d)), so entropies spread over (0.3, 1) and the flag is decided by wide margins.
    """
    import shutil

    import torch

    from melanoma.train.models import model_config

    score = Scorer(onnx_path)
    d = []
    for p in images:
        pm = score(python_tensor(p, pre))[0]
        d.append(np.log(pm) - np.log1p(-pm))
    d = np.array(d)
    c = float(np.median(d))
    k = 3.0 / max(float(np.abs(d - c).max()), 1e-12)
    dst.mkdir(parents=True)
    for f in ("params.yaml", "run.json", "predictions.parquet"):
        shutil.copy(run / f, dst / f)
    state = torch.load(run / "model.pt", weights_only=True)
    head = model_config("meshnet").head
    state[f"{head}.weight"] = state[f"{head}.weight"] * k
    bias = state[f"{head}.bias"] * k
    bias[1] -= k * c
    state[f"{head}.bias"] = bias
    torch.save(state, dst / "model.pt")
    return dst


@pytest.fixture(scope="module")
def site(web_run, web_model, images, tmp_path_factory):
    """The assembled page; its threshold set between the images' entropies so both outcomes occur."""
    from melanoma.report.export import export_run

    tmp = tmp_path_factory.mktemp("sharp")
    scored = images["png"] + images["jpeg"] + images["real"]
    pre = json.loads((web_model / "model.json").read_text())["preprocess"]
    run = _sharpened_run(web_run, tmp / "run", scored, pre, web_model / "model.onnx")
    export_run(run, tmp / "model")
    site = assemble_site(tmp / "site", tmp / "model")
    meta = json.loads((site / "model.json").read_text())
    score = Scorer(site / "model.onnx")
    ents = sorted(score(python_tensor(p, meta["preprocess"]))[1] for p in scored)
    gaps = np.diff(ents)
    i = int(np.argmax(gaps[1:-1])) + 1 if len(gaps) > 2 else int(np.argmax(gaps))  # not at the ends
    assert gaps[i] > 1e-3, f"the test images' entropies are too close to test the flag: {ents}"
    meta["threshold"] = float((ents[i] + ents[i + 1]) / 2)
    meta["threshold_source"] = "set by tests/report/test_web.py between the test images' entropies"
    meta["threshold_eval_set"] = "isic2017"
    meta["threshold_facts"] = {"fraction": 0.15, "val_coverage": 0.85, "test_coverage": 0.62,
                               "flags": ["test coverage 0.62 below 0.7"]}
    # conformal thresholds between the images' probabilities, so singletons and two-class sets occur
    ps = sorted(score(python_tensor(p, meta["preprocess"]))[0] for p in scored)
    i, j = len(ps) // 3, 2 * len(ps) // 3   # midpoints: no image sits on a threshold
    lo, hi = (ps[i] + ps[i + 1]) / 2, (ps[j] + ps[j + 1]) / 2
    meta["conformal"] = {"alpha": 0.1, "min_prob": [1 - hi, lo], "q": [hi, 1 - lo], "n_cal": [100, 20],
                         "eval_set": "isic2017", "calibrated_on": "own validation split"}
    (site / "model.json").write_text(json.dumps(meta))
    return site, meta


@pytest.fixture(scope="module")
def server(site):
    with web.serve(site[0]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed (pip install -e '.[dev]')")
    with web.launch() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser, server):
    """The page, loaded and ready; every request the browser context makes is recorded."""
    ctx = browser.new_context(viewport={"width": 900, "height": 1000})
    requests, errors = [], []
    ctx.on("request", lambda r: requests.append(r.url))
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server}/index.html")
    pg.evaluate("window.__melanoma.ready.then(() => true)")
    pg.requests, pg.errors = requests, errors
    yield pg
    ctx.close()


def upload(page, path: Path, timeout_ms: int = 30_000) -> dict:
    r = web.upload(page, path, timeout_ms)
    assert r is not None, f"{path.name}: no result within {timeout_ms / 1000} s (the page hangs)"
    return r


def page_tensor(page, shape) -> np.ndarray:
    b64 = page.evaluate("""() => { const x = window.__lastInput; const u = new Uint8Array(x.buffer);
        let s = ''; for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192));
        return btoa(s); }""")
    return np.frombuffer(base64.b64decode(b64), dtype=np.float32).reshape(shape)


# ----------------------------------------------------------------------------- tests

def test_page_scores_like_python_and_flags_uncertainty(page, site, images, tmp_path):
    _, meta = site
    pre, thr = meta["preprocess"], meta["threshold"]
    shape = (1, 3, pre["crop"], pre["crop"])
    score = Scorer(site[0] / "model.onnx")
    flags = []
    for path in images["png"] + images["jpeg"] + images["real"]:
        r = upload(page, path)
        assert "error" not in r, (path.name, r)
        x = page_tensor(page, shape)
        # the page's probability = onnxruntime in Python on the very tensor the page fed its model
        p_py, h_py = score(x)
        assert abs(r["p"] - p_py) < 1e-3, (path.name, r["p"], p_py)
        assert abs(r["entropy"] - h_py) < 1e-3, path.name
        # ... and that tensor is the training pipeline's, bit for bit for lossless files
        ref = python_tensor(path, pre)
        if path.suffix == ".png":
            np.testing.assert_array_equal(x, ref, err_msg=path.name)
        else:  # JPEG: Chromium's and Pillow's decoders may round a few pixels differently
            assert np.abs(x - ref).max() < 0.2 and np.abs(x - ref).mean() < 0.01, path.name
            assert abs(r["p"] - score(ref)[0]) < 0.02, path.name
        # the Uncertain flag follows the threshold
        uncertain = page.is_visible("#uncertain")
        assert uncertain == r["uncertain"] == (h_py > thr), (path.name, h_py, thr)
        assert page.is_visible("#result") and not page.is_visible("#error")
        assert page.text_content("#prob") == f"{r['p']:.3f}"
        # the conformal set follows model.json's thresholds (class c in it iff p_c >= min_prob[c])
        mp = meta["conformal"]["min_prob"]
        want = [n for n, pc, t in (("non-melanoma", 1 - p_py, mp[0]), ("melanoma", p_py, mp[1])) if pc >= t]
        assert r["set"] == want, (path.name, r["set"], want)
        text = page.text_content("#conformal-set")
        assert ("confident" in text) == (len(want) == 1) and "α = 0.1" in text
        flags.append(uncertain)
    assert any(flags) and not all(flags), "the threshold should flag some images and not others"
    assert page.is_visible("#synthetic-banner") == meta["synthetic"]
    # the threshold never appears without what it did where it was chosen: coverage and flags
    cov = page.text_content("#threshold-coverage")
    assert "85 % of the isic2017 validation split" in cov and "r = 0.15" in cov and "62 % of its test split" in cov
    assert "FLAGGED: test coverage 0.62 below 0.7" in cov
    assert "not a diagnostic device" in page.text_content("#disclaimer")
    assert "never leaves this browser" in page.text_content("#disclaimer")
    # Fig. 2 of the book: the page after scoring one image (a real sample when present)
    upload(page, (images["real"] or images["png"])[0])
    shot = Path(os.environ.get("MELANOMA_SCREENSHOT") or tmp_path / "webapp.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not page.errors, page.errors


def test_preprocessing_is_bit_exact_on_many_shapes(page, site):
    """preprocess.js against PIL + torchvision on raw pixels (no decoder in between)."""
    pre = site[1]["preprocess"]
    rng = np.random.default_rng(1)
    for h, w in [(37, 100), (257, 256), (777, 200), (300, 1000), (1600, 1550), (999, 1003)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = page.evaluate("""([b64, w, h, pre]) => {
            const s = atob(b64), data = new Uint8Array(s.length);
            for (let i = 0; i < s.length; i++) data[i] = s.charCodeAt(i);
            const t = window.__melanoma.preprocess.preprocess({data, width: w, height: h}, pre).tensor;
            const u = new Uint8Array(t.buffer); let o = '';
            for (let i = 0; i < u.length; i += 8192) o += String.fromCharCode(...u.subarray(i, i + 8192));
            return btoa(o); }""", [base64.b64encode(rgb.tobytes()).decode(), w, h, pre])
        x = np.frombuffer(base64.b64decode(got), dtype=np.float32).reshape(1, 3, pre["crop"], pre["crop"])
        np.testing.assert_array_equal(x, python_rgb_tensor(rgb, pre), err_msg=f"{w}x{h}")


@pytest.mark.parametrize("kind,words", [
    ("not-an-image", "not an image"),
    ("fake-jpeg", "cannot be read as an image"),
    ("empty", "empty"),
    ("too-small", "too small"),
    ("too-large-pixels", "megapixels"),
    ("too-large-file", "too large"),
])
def test_bad_input_gives_a_clear_message(page, images, kind, words):
    r = upload(page, images["bad"][kind], timeout_ms=20_000)
    assert r.get("error"), r
    assert page.is_visible("#error") and not page.is_visible("#result")
    assert words in page.text_content("#error")
    # and the page still works afterwards
    r = upload(page, images["png"][0])
    assert "error" not in r and not page.is_visible("#error")


def test_no_request_leaves_the_origin(page, server, images):
    upload(page, images["png"][1])
    assert page.requests, "no request was recorded at all"
    foreign = [u for u in page.requests
               if not (u.startswith(server + "/") or u.startswith(("blob:" + server + "/", "data:")))]
    assert not foreign, foreign
    loaded = {u.rsplit("/", 1)[-1] for u in page.requests if u.startswith(server)}
    assert {"model.json", "model.onnx", "ort.wasm.min.js", "ort-wasm-simd-threaded.wasm"} <= loaded


def test_drag_and_drop_and_camera_input(page, images):
    """A file dropped on the drop zone is scored like a chosen one; the camera input asks for a photo."""
    png = images["png"][0]
    want = upload(page, png)
    page.evaluate("window.__lastResult = undefined")
    page.evaluate("""([b64, name]) => {
        const s = atob(b64), data = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) data[i] = s.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([data], name, {type: "image/png"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [base64.b64encode(png.read_bytes()).decode(), png.name])
    got = page.evaluate("""async () => { while (!window.__lastResult) await new Promise((r) => setTimeout(r, 20));
                           return window.__lastResult; }""")
    assert got["name"] == png.name and got["p"] == want["p"]
    cam = page.locator("#camera")
    assert cam.get_attribute("accept") == "image/*" and cam.get_attribute("capture") is not None
    assert page.locator("#file").get_attribute("accept") == "image/*"


def test_opened_as_a_file_it_says_at_once_how_to_open_it(browser, site):
    """From file:// the browser blocks the page's module script and wasm: instead of "Loading the
    model…" forever, the page says within a moment that it must be served, and how."""
    import time

    pg = browser.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.monotonic()
    pg.goto((site[0] / "index.html").resolve().as_uri())
    pg.wait_for_selector("#error", state="visible", timeout=3000)
    waited = time.monotonic() - t0
    msg = pg.text_content("#error")
    assert "file://" in msg and "make serve" in msg and "melanoma serve" in msg, msg
    assert "Loading" not in (pg.text_content("#status") or "")
    assert waited < 3 and not errors, (waited, errors)
    pg.close()
    # served over http the same page loads its model and shows no such message
    with web.serve(site[0]) as url:
        pg = browser.new_page()
        pg.goto(f"{url}/index.html")
        pg.evaluate("window.__melanoma.ready.then(() => true)")
        assert not pg.is_visible("#error") and "Ready" in pg.text_content("#status")
        pg.close()
