// The training pipeline's preprocessing, re-implemented bit for bit (no DOM; runs in a browser or node).
//
// A training image travels:   decoded RGB uint8
//   1. the image cache (melanoma.data.images.resize_shorter): PIL Image.resize(BICUBIC, reducing_gap=3.0)
//      to shorter side `cache_shorter` — PIL's Reduce.c box pre-reduction when the image is ≥ 3× too
//      big, then Resample.c's two-pass resampler with 22-bit fixed-point weights (horizontal first)
//   2. torchvision v2.Resize(resize, antialias=True) on the uint8 tensor — torch's native uint8
//      antialiased bilinear (UpSampleKernel.cpp: int16 weights, per-axis precision, horizontal first)
//   3. v2.CenterCrop(crop) — the offset is Python's round() (half to even)
//   4. ToDtype(float32, scale=True) + Normalize(mean, std) — float32 arithmetic
// Each step below copies the integer arithmetic of that C code, so for the same decoded pixels the
// tensor equals melanoma.train.transforms.eval_transform(resize_shorter(rgb)) exactly (tests/test_web.py).
// torchvision takes the native uint8 path on AVX2/AVX-512 x86 and on aarch64 CPUs (what we copy);
// on other CPUs it resizes in float32 and rounds, which can differ by one grey level.
//
// Images are {data: Uint8Array (H*W*3, RGB interleaved), width, height}.

/** Python's round(): to the nearest integer, ties to even. */
export function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** C's (int) cast of a double: truncation toward zero. */
const cInt = Math.trunc;

// ------------------------------------------------------------------------------- PIL (Pillow)

function pilBicubic(x) {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

const PIL_PRECISION_BITS = 32 - 8 - 2;

/** Resample.c precompute_coeffs + normalize_coeffs_8bpc: bounds and integer weights of one axis. */
function pilCoeffs(inSize, in0, in1, outSize) {
  // in0, in1 are C floats (float32); their difference is a float subtraction.
  const span = Math.fround(Math.fround(in1) - Math.fround(in0));
  const scale = span / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 2.0 * filterscale;           // BICUBIC support 2
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const k0 = Math.fround(in0);
  for (let xx = 0; xx < outSize; xx++) {
    const center = k0 + (xx + 0.5) * scale;
    let ww = 0.0;
    const ss = 1.0 / filterscale;
    let xmin = cInt(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = cInt(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = pilBicubic((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      if (ww !== 0.0) kk[xx * ksize + x] /= ww;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const ik = new Float64Array(outSize * ksize);  // integer values, held exactly in doubles
  const one = 2 ** PIL_PRECISION_BITS;
  for (let i = 0; i < ik.length; i++) {
    ik[i] = kk[i] < 0 ? cInt(-0.5 + kk[i] * one) : cInt(0.5 + kk[i] * one);
  }
  return { ksize, bounds, k: ik };
}

function pilClip8(ss) {
  const v = Math.floor(ss / 2 ** PIL_PRECISION_BITS);   // C: ss >> PRECISION_BITS (arithmetic)
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function pilHorizontal(img, xsize, ksize, bounds, k) {
  const { data, width: W, height: H } = img;
  const out = new Uint8Array(xsize * H * 3);
  const half = 2 ** (PIL_PRECISION_BITS - 1);
  for (let y = 0; y < H; y++) {
    const row = y * W * 3;
    for (let xx = 0; xx < xsize; xx++) {
      const xmin = bounds[xx * 2], n = bounds[xx * 2 + 1], kb = xx * ksize;
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < n; x++) {
        const p = row + (x + xmin) * 3, w = k[kb + x];
        s0 += data[p] * w; s1 += data[p + 1] * w; s2 += data[p + 2] * w;
      }
      const o = (y * xsize + xx) * 3;
      out[o] = pilClip8(s0); out[o + 1] = pilClip8(s1); out[o + 2] = pilClip8(s2);
    }
  }
  return { data: out, width: xsize, height: H };
}

function pilVertical(img, ysize, ksize, bounds, k) {
  const { data, width: W } = img;
  const out = new Uint8Array(W * ysize * 3);
  const half = 2 ** (PIL_PRECISION_BITS - 1);
  for (let yy = 0; yy < ysize; yy++) {
    const ymin = bounds[yy * 2], n = bounds[yy * 2 + 1], kb = yy * ksize;
    for (let xx = 0; xx < W; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < n; y++) {
        const p = ((y + ymin) * W + xx) * 3, w = k[kb + y];
        s0 += data[p] * w; s1 += data[p + 1] * w; s2 += data[p + 2] * w;
      }
      const o = (yy * W + xx) * 3;
      out[o] = pilClip8(s0); out[o + 1] = pilClip8(s1); out[o + 2] = pilClip8(s2);
    }
  }
  return { data: out, width: W, height: ysize };
}

/**
 * Resample.c ImagingResampleInner (8 bpc, BICUBIC) with a float32 source box. Pillow ≥ 13 runs the
 * vertical pass first when the height shrinks by more than twice as many pixels as the width
 * (`verticalFirstRule`); older Pillow always runs the horizontal pass first. The two orders round
 * the intermediate image differently, so the rule matters for exactness.
 */
function pilResample(img, xsize, ysize, box, verticalFirstRule) {
  const { width: W, height: H } = img;
  const needH = xsize !== W || box[0] !== 0 || Math.fround(box[2]) !== xsize;
  const needV = ysize !== H || box[1] !== 0 || Math.fround(box[3]) !== ysize;
  const horizontalFirst = !(verticalFirstRule && H - ysize > 0 && H - ysize > (W - xsize) * 2);
  const horiz = (im) => {
    const c = pilCoeffs(W, box[0], box[2], xsize);
    return pilHorizontal(im, xsize, c.ksize, c.bounds, c.k);
  };
  const vert = (im) => {
    const c = pilCoeffs(H, box[1], box[3], ysize);
    return pilVertical(im, ysize, c.ksize, c.bounds, c.k);
  };
  let cur = img;
  if (horizontalFirst) {
    if (needH) cur = horiz(cur);
    if (needV) cur = vert(cur);
  } else {
    if (needV) cur = vert(cur);
    if (needH) cur = horiz(cur);
  }
  if (cur === img) cur = { data: img.data.slice(), width: W, height: H };
  return cur;
}

/** Reduce.c division_UINT32(divider, 8): float arithmetic, truncated. */
function reduceMultiplier(n) {
  return Math.trunc(Math.fround(4294967296 / Math.fround(256 * n)));
}

/** Reduce.c ImagingReduce (box averages of fx × fy blocks, partial blocks at the right/bottom). */
function pilReduce(img, fx, fy) {
  const { data, width: W, height: H } = img;
  const ow = Math.floor((W + fx - 1) / fx), oh = Math.floor((H + fy - 1) / fy);
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    const y0 = y * fy, y1 = Math.min(y0 + fy, H);
    for (let x = 0; x < ow; x++) {
      const x0 = x * fx, x1 = Math.min(x0 + fx, W);
      const n = (x1 - x0) * (y1 - y0);
      const amend = Math.floor(n / 2), mult = reduceMultiplier(n);
      let s0 = 0, s1 = 0, s2 = 0;
      for (let yy = y0; yy < y1; yy++) {
        for (let xx = x0; xx < x1; xx++) {
          const p = (yy * W + xx) * 3;
          s0 += data[p]; s1 += data[p + 1]; s2 += data[p + 2];
        }
      }
      const o = (y * ow + x) * 3;
      out[o] = Math.floor(((s0 + amend) * mult) / 16777216) & 255;
      out[o + 1] = Math.floor(((s1 + amend) * mult) / 16777216) & 255;
      out[o + 2] = Math.floor(((s2 + amend) * mult) / 16777216) & 255;
    }
  }
  return { data: out, width: ow, height: oh };
}

/** PIL Image.resize((xsize, ysize), BICUBIC, reducing_gap=3.0) of an RGB image. */
export function pilResizeBicubic(img, xsize, ysize, { reducingGap = 3.0, verticalFirstRule = true } = {}) {
  const { width: W, height: H } = img;
  if (W === xsize && H === ysize) return { data: img.data.slice(), width: W, height: H };
  let box = [0, 0, W, H];
  const fx = Math.trunc(W / xsize / reducingGap) || 1;
  const fy = Math.trunc(H / ysize / reducingGap) || 1;
  if (fx > 1 || fy > 1) {
    // _get_safe_box of the whole image is the whole image: reduce it all, then shrink the box.
    img = pilReduce(img, fx, fy);
    box = [0, 0, W / fx, H / fy];
  }
  return pilResample(img, xsize, ysize, box, verticalFirstRule);
}

/** melanoma.data.images.resize_shorter: the image cache's resize (PIL bicubic, reducing_gap 3). */
export function cacheResize(img, shorter, verticalFirstRule = true) {
  const { width: w, height: h } = img;
  if (Math.min(h, w) === shorter) return img;
  const s = shorter / Math.min(h, w);
  const xsize = Math.max(1, roundHalfEven(w * s)), ysize = Math.max(1, roundHalfEven(h * s));
  return pilResizeBicubic(img, xsize, ysize, { verticalFirstRule });
}

// ------------------------------------------------------------------------------- torch / torchvision

/** UpSampleKernel.cpp: antialiased bilinear bounds and int16 weights of one axis (+ their precision). */
function torchCoeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const support = scale >= 1.0 ? 1.0 * scale : 1.0;     // interp_size 2 → 2 * 0.5
  const ksize = Math.ceil(support) * 2 + 1;
  const invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  const xmins = new Int32Array(outSize), sizes = new Int32Array(outSize);
  const wf = new Float64Array(outSize * ksize);
  let wtMax = 0.0;
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(cInt(center - support + 0.5), 0);
    let xsize = Math.min(cInt(center + support + 0.5), inSize) - xmin;
    xsize = Math.min(Math.max(xsize, 0), ksize);
    let total = 0.0;
    for (let j = 0; j < xsize; j++) {
      let t = Math.abs((j + xmin - center + 0.5) * invscale);
      const w = t < 1.0 ? 1.0 - t : 0.0;
      wf[i * ksize + j] = w;
      total += w;
    }
    if (total !== 0.0) {
      for (let j = 0; j < xsize; j++) {
        wf[i * ksize + j] /= total;
        wtMax = Math.max(wtMax, wf[i * ksize + j]);
      }
    }
    xmins[i] = xmin; sizes[i] = xsize;
  }
  let precision = 0;
  for (precision = 0; precision < 22; ++precision) {
    const next = cInt(0.5 + wtMax * 2 ** (precision + 1));
    if (next >= 2 ** 15) break;
  }
  const k = new Float64Array(wf.length);
  for (let i = 0; i < wf.length; i++) {
    const v = wf[i] * 2 ** precision;
    k[i] = v < 0 ? cInt(-0.5 + v) : cInt(0.5 + v);
  }
  return { ksize, xmins, sizes, k, precision };
}

function torchClip(sum, precision) {
  const v = Math.floor(sum / 2 ** precision);            // >> precision, then saturate to uint8
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** torchvision v2.Resize(size, antialias=True) (shorter side → size) of a uint8 image. */
export function torchResizeShorter(img, size) {
  const { data, width: w, height: h } = img;
  const short = Math.min(w, h), long = Math.max(w, h);
  const newLong = Math.trunc((size * long) / short);
  const [nw, nh] = w <= h ? [size, newLong] : [newLong, size];
  if (nw === w && nh === h) return img;
  let cur = img;
  if (nw !== w) {
    const { ksize, xmins, sizes, k, precision } = torchCoeffs(w, nw);
    const out = new Uint8Array(nw * h * 3);
    const init = 2 ** (precision - 1);
    for (let y = 0; y < h; y++) {
      for (let i = 0; i < nw; i++) {
        let s0 = init, s1 = init, s2 = init;
        const xmin = xmins[i], n = sizes[i], kb = i * ksize;
        for (let j = 0; j < n; j++) {
          const p = (y * w + xmin + j) * 3, wt = k[kb + j];
          s0 += data[p] * wt; s1 += data[p + 1] * wt; s2 += data[p + 2] * wt;
        }
        const o = (y * nw + i) * 3;
        out[o] = torchClip(s0, precision); out[o + 1] = torchClip(s1, precision);
        out[o + 2] = torchClip(s2, precision);
      }
    }
    cur = { data: out, width: nw, height: h };
  }
  if (nh !== h) {
    const { ksize, xmins, sizes, k, precision } = torchCoeffs(h, nh);
    const src = cur.data, cw = cur.width;
    const out = new Uint8Array(cw * nh * 3);
    const init = 2 ** (precision - 1);
    for (let i = 0; i < nh; i++) {
      const ymin = xmins[i], n = sizes[i], kb = i * ksize;
      for (let x = 0; x < cw; x++) {
        let s0 = init, s1 = init, s2 = init;
        for (let j = 0; j < n; j++) {
          const p = ((ymin + j) * cw + x) * 3, wt = k[kb + j];
          s0 += src[p] * wt; s1 += src[p + 1] * wt; s2 += src[p + 2] * wt;
        }
        const o = (i * cw + x) * 3;
        out[o] = torchClip(s0, precision); out[o + 1] = torchClip(s1, precision);
        out[o + 2] = torchClip(s2, precision);
      }
    }
    cur = { data: out, width: cw, height: nh };
  }
  return cur;
}

/** torchvision CenterCrop(size) (the image is at least size × size here). */
export function centerCrop(img, size) {
  const { data, width: w, height: h } = img;
  if (w < size || h < size) throw new Error(`image ${w}x${h} is smaller than the crop ${size}`);
  const top = roundHalfEven((h - size) / 2.0), left = roundHalfEven((w - size) / 2.0);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const s = ((top + y) * w + left) * 3;
    out.set(data.subarray(s, s + size * 3), y * size * 3);
  }
  return { data: out, width: size, height: size };
}

/** ToDtype(float32, scale=True) + Normalize(mean, std) → Float32Array (1, 3, H, W). */
export function normalize(img, mean, std) {
  const { data, width: w, height: h } = img;
  const n = w * h, out = new Float32Array(3 * n);
  const f = Math.fround, inv = f(1.0 / 255);
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]), s = f(std[c]);
    for (let i = 0; i < n; i++) {
      const x = f(data[i * 3 + c] * inv);
      out[c * n + i] = f(f(x - m) / s);
    }
  }
  return out;
}

/** RGBA bytes (canvas ImageData) → RGB image (alpha dropped, as melanoma.data.images does). */
export function rgbaToRgb(rgba, width, height) {
  const n = width * height, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = rgba[i * 4]; out[i * 3 + 1] = rgba[i * 4 + 1]; out[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return { data: out, width, height };
}

/**
 * The whole chain, as model.json's "preprocess" block says:
 * {cache_shorter (null: skip step 1), resize, crop, mean, std}. Returns the (1, 3, crop, crop) tensor
 * and the intermediate sizes (for display and tests).
 */
export function preprocess(img, pre) {
  const sizes = [[img.width, img.height]];
  if (pre.cache_shorter) {
    img = cacheResize(img, pre.cache_shorter, pre.cache_vertical_first !== false);
    sizes.push([img.width, img.height]);
  }
  img = torchResizeShorter(img, pre.resize);
  sizes.push([img.width, img.height]);
  const crop = centerCrop(img, pre.crop);
  return { tensor: normalize(crop, pre.mean, pre.std), crop, sizes };
}
