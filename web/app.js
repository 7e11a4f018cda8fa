// The page: choose / drop / photograph an image → preprocess exactly as model.json says → onnxruntime-web
// (wasm, one thread, files from this folder) → p(melanoma), entropy, "Uncertain" above the threshold.
// Nothing is uploaded: the image is decoded, resized and scored in this tab.
//
// For tests and the book: window.__melanoma = {ready (Promise), meta, preprocess module, score(),
// bench()}, window.__lastInput (the Float32Array fed to the model), window.__lastResult.
import * as pre from "./preprocess.js";

const LIMITS = {
  maxBytes: 30 * 1024 * 1024,   // file size
  maxPixels: 40_000_000,        // width × height, checked from the header before decoding
  minSide: 16,                  // as melanoma.data.images.DEFAULT_MIN_SIDE
  timeoutMs: 20_000,            // decoding or scoring longer than this is reported, not awaited forever
};

const $ = (id) => document.getElementById(id);
const state = { meta: null, session: null };

function setStatus(text) { $("status").textContent = text; }
function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.hidden = !text;
  if (text) $("result").hidden = true;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms); }),
  ]);
}

const fmt = (x, d = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "—");

// ------------------------------------------------------------------------------------ model

async function loadModel() {
  const res = await fetch("model.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`model.json: HTTP ${res.status}`);
  const meta = await res.json();
  const here = new URL(".", location.href).href;
  ort.env.wasm.numThreads = 1;          // no SharedArrayBuffer → no cross-origin isolation needed
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = {
    mjs: new URL("ort-wasm-simd-threaded.mjs", here).href,
    wasm: new URL("ort-wasm-simd-threaded.wasm", here).href,
  };
  const session = await ort.InferenceSession.create(new URL(meta.onnx.file, here).href, {
    executionProviders: ["wasm"], graphOptimizationLevel: "all",
  });
  state.meta = meta;
  state.session = session;
  showModelInfo(meta);
  return meta;
}

// What the threshold did where it was chosen: never a threshold without its coverage.
function coverageText(meta) {
  const f = meta.threshold_facts || {};
  if (f.test_coverage === undefined || f.test_coverage === null) return "not measured (no rejection result)";
  const pct = (x) => `${Math.round(100 * x)} %`;
  let t = `kept ${pct(f.val_coverage)} of the ${meta.threshold_eval_set} validation split` +
    (f.fraction !== null && f.fraction !== undefined ? ` (rejects r = ${fmt(f.fraction, 2)})` : "") +
    ` and ${pct(f.test_coverage)} of its test split`;
  if (f.flags && f.flags.length) t += ` — FLAGGED: ${f.flags.join("; ")}`;
  return t;
}

function showModelInfo(meta) {
  $("synthetic-banner").hidden = !meta.synthetic;
  $("threshold").textContent = fmt(meta.threshold, 3);
  $("threshold-coverage").textContent = coverageText(meta);
  const info = [
    ["model", `${meta.model} (${(meta.n_params || 0).toLocaleString("en")} parameters, ${Math.round(meta.onnx.bytes / 1024)} KB)`],
    ["trained on", `${meta.train_label || meta.train || "—"}${meta.datasets ? ` (${meta.datasets.join(", ")})` : ""}`],
    ["input", `${meta.preprocess.crop} × ${meta.preprocess.crop} px (shorter side → ${meta.preprocess.cache_shorter} → ${meta.preprocess.resize} px, centre crop)`],
    ["uncertainty threshold", `${fmt(meta.threshold, 3)} bits — ${meta.threshold_source}`],
    ["threshold coverage", coverageText(meta)],
    ["synthetic", meta.synthetic ? "yes — a demonstration model" : "no"],
  ];
  const dl = $("model-info");
  dl.replaceChildren();
  for (const [k, v] of info) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  const rows = Object.entries(meta.test_metrics || {});
  const body = $("metrics").querySelector("tbody");
  body.replaceChildren();
  for (const [es, m] of rows) {
    const tr = document.createElement("tr");
    for (const v of [es, fmt(m.auc), fmt(m.accuracy), fmt(m.sensitivity), fmt(m.specificity), m.n ?? "—"]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
    }
    body.append(tr);
  }
  $("metrics").hidden = rows.length === 0;
  $("metrics-source").textContent = rows.length ? `Source: ${meta.metrics_source}` : "";
}

function softmax2(l0, l1) {
  const m = Math.max(l0, l1), e0 = Math.exp(l0 - m), e1 = Math.exp(l1 - m);
  return [e0 / (e0 + e1), e1 / (e0 + e1)];
}

function entropyBits(ps) {
  let h = 0;
  for (const p of ps) if (p > 0) h -= p * Math.log2(p);
  return h;
}

/** The class-conditional conformal set (model.json `conformal`): class c is in it iff p_c >= min_prob[c]. */
function conformalSet(probs) {
  const c = state.meta && state.meta.conformal;
  if (!c) return null;
  return [0, 1].filter((k) => probs[k] >= c.min_prob[k]).map((k) => ["non-melanoma", "melanoma"][k]);
}

function conformalText(set) {
  const c = state.meta.conformal;
  const verdict = set.length === 1 ? `confident: ${set[0]}` : "Uncertain — refer";
  return `{${set.join(", ")}} → ${verdict} (α = ${c.alpha}: at most ${Math.round(100 * c.alpha)} % of each class ` +
    `misses its label, if your image resembles the ${c.eval_set} calibration images)`;
}

/** Run the model on a preprocessed (1, 3, S, S) tensor. */
async function score(tensor) {
  const { meta, session } = state;
  const S = meta.preprocess.crop;
  const input = new ort.Tensor("float32", tensor, [1, 3, S, S]);
  const t0 = performance.now();
  const out = await session.run({ [meta.onnx.input]: input });
  const ms = performance.now() - t0;
  const logits = Array.from(out[meta.onnx.output].data);
  const probs = softmax2(logits[0], logits[1]);
  const entropy = entropyBits(probs);
  return { logits, probs, p: probs[1], entropy, uncertain: entropy > meta.threshold, set: conformalSet(probs), ms };
}

/** Median inference time (ms) over n runs on the last input (benchmarks/web_inference.py). */
async function bench(n = 20) {
  const x = window.__lastInput;
  if (!x) throw new Error("score an image first");
  await score(x);                               // warm-up
  const times = [];
  for (let i = 0; i < n; i++) times.push((await score(x)).ms);
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(n / 2)], min: times[0], max: times[n - 1], n };
}

// ------------------------------------------------------------------------------------ image input

/** Width and height from the header (no full decode yet); rejects what the browser cannot read. */
function probeSize(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight, img });
    img.onerror = () => reject(new Error("not-an-image"));
    img.src = url;
  });
}

async function decodePixels(file) {
  // Pixels as stored: no colour-space conversion, no premultiplication, EXIF orientation applied
  // (as melanoma.data.images.open_image does with ImageOps.exif_transpose).
  const bmp = await createImageBitmap(file, {
    colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image",
  });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const { data } = ctx.getImageData(0, 0, bmp.width, bmp.height);
  const out = pre.rgbaToRgb(data, bmp.width, bmp.height);
  bmp.close();
  return out;
}

function drawCrop(crop) {
  const c = $("crop");
  c.width = crop.width; c.height = crop.height;
  const ctx = c.getContext("2d");
  const id = ctx.createImageData(crop.width, crop.height);
  for (let i = 0; i < crop.width * crop.height; i++) {
    id.data[i * 4] = crop.data[i * 3]; id.data[i * 4 + 1] = crop.data[i * 3 + 1];
    id.data[i * 4 + 2] = crop.data[i * 3 + 2]; id.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(id, 0, 0);
  $("crop-caption").textContent = `what the model sees (${crop.width} × ${crop.height})`;
}

function showResult(r) {
  $("prob").textContent = fmt(r.p, 3);
  $("prob-bar").style.width = `${(100 * r.p).toFixed(1)}%`;
  $("entropy").textContent = fmt(r.entropy, 3);
  $("label").textContent = r.p > state.meta.decision_threshold ? "melanoma" : "non-melanoma";
  $("uncertain").hidden = !r.uncertain;
  $("conformal-row").hidden = r.set === null;
  if (r.set !== null) $("conformal-set").textContent = conformalText(r.set);
  $("timing").textContent = `Scored on this device in ${r.ms.toFixed(1)} ms (onnxruntime-web, wasm, 1 thread).`;
  $("result").hidden = false;
}

let busy = Promise.resolve();

async function handleFile(file) {
  const job = busy.then(() => processFile(file));
  busy = job.catch(() => {});
  return job;
}

async function processFile(file) {
  showError("");
  window.__lastResult = null;
  window.__lastInput = null;
  if (!state.session) { showError("The model is not loaded yet; wait a moment and try again."); return; }
  if (!file) return;
  const mb = (file.size / 1024 / 1024).toFixed(1);
  if (file.size === 0) { showError(`“${file.name}” is empty (0 bytes).`); return reportError("empty"); }
  if (file.size > LIMITS.maxBytes) {
    showError(`“${file.name}” is too large (${mb} MB; the limit is ${LIMITS.maxBytes / 1024 / 1024} MB). Use a smaller photo.`);
    return reportError("too-large-file");
  }
  if (file.type && !file.type.startsWith("image/")) {
    showError(`“${file.name}” is not an image (${file.type}). Choose a JPEG or PNG photo.`);
    return reportError("not-an-image");
  }
  const url = URL.createObjectURL(file);
  try {
    setStatus("Reading the image…");
    let size;
    try {
      size = await withTimeout(probeSize(url), LIMITS.timeoutMs, "reading the image");
    } catch (e) {
      showError(`“${file.name}” cannot be read as an image (${e.message === "not-an-image" ? "unknown or damaged format" : e.message}). Choose a JPEG or PNG photo.`);
      return reportError("not-an-image");
    }
    const { width, height } = size;
    if (width * height > LIMITS.maxPixels) {
      showError(`“${file.name}” is too large: ${width} × ${height} = ${(width * height / 1e6).toFixed(1)} megapixels (the limit is ${LIMITS.maxPixels / 1e6} MP).`);
      return reportError("too-large-pixels");
    }
    if (Math.min(width, height) < LIMITS.minSide) {
      showError(`“${file.name}” is too small: ${width} × ${height} pixels (each side needs at least ${LIMITS.minSide} px).`);
      return reportError("too-small");
    }
    $("preview").src = url;
    setStatus("Preprocessing…");
    const rgb = await withTimeout(decodePixels(file), LIMITS.timeoutMs, "decoding the image");
    const { tensor, crop, sizes } = pre.preprocess(rgb, state.meta.preprocess);
    window.__lastInput = tensor;
    drawCrop(crop);
    setStatus("Scoring…");
    const r = await withTimeout(score(tensor), LIMITS.timeoutMs, "scoring");
    window.__lastResult = { ...r, sizes, name: file.name, width, height };
    showResult(r);
    setStatus(`Scored “${file.name}” (${width} × ${height}).`);
  } catch (e) {
    showError(`Could not score “${file.name}”: ${e.message}`);
    reportError("failed", e.message);
  }
}

function reportError(reason, detail = "") {
  window.__lastResult = { error: reason, detail };
  setStatus("");
}

// ------------------------------------------------------------------------------------ wiring

function wire() {
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (ev) => {
      const f = ev.target.files && ev.target.files[0];
      ev.target.value = "";                        // choosing the same file again fires again
      if (f) handleFile(f);
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (f) handleFile(f);
  });
  // A file dropped outside the drop zone must not navigate away (and "upload" it to the tab).
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
}

wire();
const ready = loadModel().then(
  (meta) => { setStatus("Ready: choose, drop or photograph an image."); return meta; },
  (e) => { setStatus(""); showError(`The model could not be loaded: ${e.message}`); throw e; },
);
window.__melanoma = { ready, preprocess: pre, score, bench, handleFile, get meta() { return state.meta; } };
