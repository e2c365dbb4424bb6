// srdeploy in the browser: the page's model checked against its manifest (SubtleCrypto), then images upscaled
// with onnxruntime-web as srdeploy's runtime/ does it in Python: tiles with the receptive radius as context (the
// same pixels as one pass over the whole image), a gate that reads the whole image (DSRNet) decided once for all
// tiles, luma (Y) networks with Pillow's bicubic chroma, alpha resized alike, and a PNG written here (no canvas
// premultiplication). Errors are one line naming the fix; nothing here throws past `main`.

const MANIFEST = "srdeploy-web.json";
const FORMAT = "srdeploy-web-1";
const GATE_PARTS = ["gate_features", "gate_margin", "branch0", "branch1"];

export class SrError extends Error {}

function fail(message) {
  throw new SrError(message);
}

// ---- the manifest and the model ----

function manifestProblem(m) {
  const integer = (v, lo, hi) => Number.isInteger(v) && v >= lo && v <= hi;
  if (!m || m.format !== FORMAT) return `not an ${FORMAT} manifest`;
  if (!integer(m.scale, 1, 16)) return "scale is not an integer from 1 to 16";
  if (m.colour !== "y" && m.colour !== "rgb") return "colour is not y or rgb";
  if (m.channels !== (m.colour === "y" ? 1 : 3)) return "channels do not match the colour";
  if (!integer(m.receptive_radius, 0, 4096)) return "receptive_radius is not an integer from 0 to 4096";
  if (!integer(m.min_size, 1, 65536)) return "min_size is not an integer from 1 to 65536";
  if (!integer(m.tile, 0, 65536) || !integer(m.max_pixels, 1, 2 ** 40)) return "tile or max_pixels out of range";
  const needed = m.global_gate ? ["model", ...GATE_PARTS] : ["model"];
  for (const name of needed) {
    const graph = m.graphs && m.graphs[name];
    if (!graph || !/^[A-Za-z0-9_.-]+\.onnx$/.test(graph.file) || !/^[0-9a-f]{64}$/.test(graph.sha256)) {
      return `graph ${name} is missing or malformed`;
    }
  }
  if (!m.ort || !m.ort.files || typeof m.ort.base !== "string") return "onnxruntime-web's files are not named";
  return null;
}

export async function loadManifest(base) {
  let response;
  try {
    response = await fetch(new URL(MANIFEST, base), { cache: "no-store" });
  } catch (e) {
    fail(`${MANIFEST} cannot be fetched (${e.message}): serve this folder (python serve.py), not file://`);
  }
  if (!response.ok) fail(`${MANIFEST} is missing (HTTP ${response.status}): this folder is not an srdeploy web export`);
  let manifest;
  try {
    manifest = await response.json();
  } catch {
    fail(`${MANIFEST} is damaged (not JSON): export the folder again`);
  }
  const problem = manifestProblem(manifest);
  if (problem) fail(`${MANIFEST}: ${problem}: export the folder again`);
  return manifest;
}

async function sha256Hex(buffer) {
  if (!globalThis.crypto || !crypto.subtle) {
    fail("this page is not in a secure context, so it cannot check the model's sha256: serve it over HTTPS or from localhost");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchBytes(url, what, init = {}) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    fail(`${what} cannot be fetched (${e.message.split("\n")[0]}): check the folder is complete and served`);
  }
  if (!response.ok) fail(`${what} is missing (HTTP ${response.status}): export the folder again`);
  return new Uint8Array(await response.arrayBuffer());
}

// onnxruntime-web from the import map in index.html (each module with its integrity), its WebAssembly binary
// fetched here with its integrity too.
async function loadOrt(manifest, base, backend, threads) {
  const webgpu = backend === "webgpu";
  if (webgpu && !(navigator.gpu && (await navigator.gpu.requestAdapter()))) {
    fail("this browser offers no WebGPU adapter: drop backend=webgpu to run on WebAssembly");
  }
  let ort;
  try {
    ort = webgpu ? await import("onnxruntime-web/webgpu") : await import("onnxruntime-web/wasm");
  } catch (e) {
    fail(`onnxruntime-web cannot be loaded (${String(e.message).split("\n")[0].slice(0, 120)}): its files are damaged or ` +
      "changed (the import map checks their integrity) or unreachable: export the folder again");
  }
  const binary = manifest.ort.files[webgpu ? "webgpu_binary" : "wasm_binary"];
  const from = new URL(manifest.ort.base, base);
  ort.env.wasm.wasmPaths = from.href;
  ort.env.wasm.wasmBinary = await fetchBytes(new URL(binary.name, from), `onnxruntime-web's ${binary.name}`,
    { integrity: binary.integrity });
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  return ort;
}

// The page's model: each graph checked against the manifest, then one onnxruntime-web session per graph.
export async function loadModel(base, { backend = "wasm", threads = 0 } = {}) {
  const manifest = await loadManifest(base);
  const isolated = globalThis.crossOriginIsolated === true;
  const wanted = threads > 0 ? threads : isolated ? Math.min(navigator.hardwareConcurrency || 1, 8) : 1;
  const ort = await loadOrt(manifest, base, backend, isolated ? wanted : 1);
  const sessions = {};
  for (const name of manifest.global_gate ? ["model", ...GATE_PARTS] : ["model"]) {
    const graph = manifest.graphs[name];
    const bytes = await fetchBytes(new URL(graph.file, base), graph.file);
    if ((await sha256Hex(bytes)) !== graph.sha256) {
      fail(`${graph.file} does not match its sha256 in ${MANIFEST} (damaged or replaced): export the folder again`);
    }
    try {
      sessions[name] = await ort.InferenceSession.create(bytes, {
        executionProviders: [backend], graphOptimizationLevel: "all",
      });
    } catch (e) {
      fail(`${graph.file} cannot be loaded by onnxruntime-web (${String(e.message || e).split("\n")[0].slice(0, 160)}): export the folder again`);
    }
  }
  const run = async (name, data, dims) => {  // float32 N×C×H×W in, the graph's output { data, dims } out
    const session = sessions[name];
    const outputs = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", data, dims) });
    const out = outputs[session.outputNames[0]];
    return { data: out.location && out.location !== "cpu" ? await out.getData(true) : out.data, dims: out.dims };
  };
  return { manifest, run, backend, threads: isolated ? wanted : 1, isolated };
}

// ---- pictures in and out ----

// The RGBA pixels of an 8-bit, non-interlaced PNG with alpha (colour type 6 or 4), decoded here: a browser's
// decoders premultiply alpha, which loses the colour under transparent pixels (black where alpha is 0) that
// srdeploy's Python runtime feeds the network. null for any other file (the browser's pixels are then exact).
async function pngWithAlpha(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length < 33 || signature.some((b, i) => bytes[i] !== b)) return null;
  const width = view.getUint32(16), height = view.getUint32(20), depth = bytes[24], type = bytes[25];
  if (depth !== 8 || (type !== 6 && type !== 4) || bytes[28] !== 0) return null;
  const parts = [];
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at), kind = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (kind === "IDAT") parts.push(bytes.subarray(at + 8, at + 8 + length));
    if (kind === "IEND") break;
    at += 12 + length;
  }
  let raw;
  try {
    raw = new Uint8Array(await new Response(new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer());
  } catch {
    return null;  // the browser's decoder says what is wrong with it
  }
  const bpp = type === 6 ? 4 : 2, stride = width * bpp;
  if (raw.length < height * (stride + 1)) return null;
  const rows = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)], line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? rows[y * stride + x - bpp] : 0, b = y ? rows[(y - 1) * stride + x] : 0;
      const c = x >= bpp && y ? rows[(y - 1) * stride + x - bpp] : 0;
      let predicted = 0;
      if (filter === 1) predicted = a;
      else if (filter === 2) predicted = b;
      else if (filter === 3) predicted = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      rows[y * stride + x] = (line[x] + predicted) & 0xff;
    }
  }
  if (type === 6) return { width, height, rgba: rows };
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) rgba.set([rows[2 * i], rows[2 * i], rows[2 * i], rows[2 * i + 1]], 4 * i);
  return { width, height, rgba };
}

// An image's pixels as a viewer shows them (EXIF orientation applied), RGBA, not premultiplied; its size checked
// against the limit before the pixels are decoded.
export async function decodePicture(blob, name, maxPixels) {
  const url = URL.createObjectURL(blob);
  try {
    const header = new Image();
    await new Promise((resolve, reject) => {
      header.onload = resolve;
      header.onerror = () => reject(new SrError(`${name} is not an image this browser can decode: pass a PNG, JPEG or WebP file`));
      header.src = url;
    });
    const width = header.naturalWidth, height = header.naturalHeight;
    if (!width || !height) fail(`${name} is empty (${width}×${height}): pass a non-empty image`);
    if (width * height > maxPixels) {
      fail(`${name} has ${width}×${height} = ${(width * height / 1e6).toFixed(0)} MP, above the ${(maxPixels / 1e6).toFixed(0)} MP limit: downscale it`);
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none" });
    } catch (e) {
      fail(`${name} cannot be decoded (${e.message.split("\n")[0]}): the file is truncated or corrupt`);
    }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    bitmap.close();
    let hasAlpha = false;
    for (let i = 3; i < rgba.length; i += 4) if (rgba[i] !== 255) { hasAlpha = true; break; }
    const exact = hasAlpha ? await pngWithAlpha(new Uint8Array(await blob.arrayBuffer())) : null;
    if (exact && exact.width === canvas.width && exact.height === canvas.height) return { ...exact, hasAlpha };
    return { width: canvas.width, height: canvas.height, rgba, hasAlpha };
  } finally {
    URL.revokeObjectURL(url);
  }
}

// ITU-R BT.601 studio swing, as runtime/images.py (MATLAB's rgb2ycbcr): columns Y, Cb, Cr.
const RGB_TO_YCBCR = [[65.481, -37.797, 112.0], [128.553, -74.203, -93.786], [24.966, 112.0, -18.214]];
const YCBCR_OFFSET = [16, 128, 128];
const YCBCR_TO_RGB = inverse3(RGB_TO_YCBCR);

function inverse3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  return [[(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det]];
}

function ycbcr(r, g, b, k) {  // RGB uint8 → component k of YCbCr in [0, 1] units
  const m = RGB_TO_YCBCR;
  return ((r / 255) * m[0][k] + (g / 255) * m[1][k] + (b / 255) * m[2][k] + YCBCR_OFFSET[k]) / 255;
}

// The network's float32 1×C×h×w input for the window rows ya:yb, columns xa:xb.
function windowInput(picture, colour, ya, yb, xa, xb) {
  const { width, rgba } = picture;
  const h = yb - ya, w = xb - xa, plane = h * w;
  const out = new Float32Array((colour === "y" ? 1 : 3) * plane);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const at = ((ya + y) * width + xa + x) * 4, o = y * w + x;
      if (colour === "y") {
        out[o] = ycbcr(rgba[at], rgba[at + 1], rgba[at + 2], 0);
      } else {
        out[o] = rgba[at] / 255;
        out[plane + o] = rgba[at + 1] / 255;
        out[2 * plane + o] = rgba[at + 2] / 255;
      }
    }
  }
  return out;
}

// Float in [0, 1] → uint8 as runtime/images.to_uint8: clamp(v·255) in float32, rounded half to even.
function toUint8(v) {
  const s = Math.fround(Math.fround(v) * 255);
  if (!(s > 0)) return 0;
  if (s >= 255) return 255;
  const r = Math.floor(s + 0.5);
  return r - s === 0.5 && r & 1 ? r - 1 : r;
}

// Pillow's bicubic filter (a = −0.5): per output position its first input index and its normalised weights, `taps`
// per position (zero past its own count; runtime/images._bicubic_coefficients).
function bicubicCoefficients(inSize, outSize) {
  const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = 2 * filterscale;
  const kernel = (x) => (x < 1 ? ((-0.5 + 2) * x - (-0.5 + 3)) * x * x + 1 : x < 2 ? (((x - 5) * x + 8) * x - 4) * -0.5 : 0);
  const starts = new Int32Array(outSize), counts = new Int32Array(outSize);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    starts[i] = Math.max(Math.trunc(center - support + 0.5), 0);
    counts[i] = Math.min(Math.trunc(center + support + 0.5), inSize) - starts[i];
  }
  const taps = Math.max(...counts), weights = new Float64Array(outSize * taps);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    let total = 0;
    for (let k = 0; k < counts[i]; k++) {
      weights[i * taps + k] = kernel(Math.abs((k + starts[i] - center + 0.5) * (1 / filterscale)));
      total += weights[i * taps + k];
    }
    if (total !== 0) for (let k = 0; k < counts[i]; k++) weights[i * taps + k] /= total;
  }
  return { starts, taps, weights };
}

// A float32 plane h×w resized bicubically to outH×outW as Pillow resizes mode F: the horizontal pass rounded to
// float32, then the vertical one (runtime/images.bicubic_rows).
function bicubicResize(plane, w, h, outW, outH) {
  const cx = bicubicCoefficients(w, outW), cy = bicubicCoefficients(h, outH);
  const wide = new Float32Array(h * outW);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < outW; x++) {
      const s = cx.starts[x], at = x * cx.taps;
      let sum = 0;
      for (let k = 0; k < cx.taps; k++) sum += plane[y * w + Math.min(s + k, w - 1)] * cx.weights[at + k];
      wide[y * outW + x] = sum;
    }
  }
  const out = new Float32Array(outH * outW), sums = new Float64Array(outW);
  for (let y = 0; y < outH; y++) {
    const s = cy.starts[y], at = y * cy.taps;
    sums.fill(0);
    for (let k = 0; k < cy.taps; k++) {
      const weight = cy.weights[at + k], row = Math.min(s + k, h - 1) * outW;
      for (let x = 0; x < outW; x++) sums[x] += wide[row + x] * weight;
    }
    out.set(sums, y * outW);
  }
  return out;
}

// The upscaled picture as RGBA bytes (alpha 255 where the input has none) from the network's output (C×H×W float32).
function outputPixels(picture, output, colour, outW, outH) {
  const plane = outW * outH, pixels = new Uint8ClampedArray(plane * 4);
  if (colour === "rgb") {
    for (let i = 0; i < plane; i++) {
      pixels[4 * i] = toUint8(output[i]);
      pixels[4 * i + 1] = toUint8(output[plane + i]);
      pixels[4 * i + 2] = toUint8(output[2 * plane + i]);
      pixels[4 * i + 3] = 255;
    }
  } else {
    const { width, height, rgba } = picture, cbIn = new Float32Array(width * height), crIn = new Float32Array(width * height);
    for (let i = 0; i < cbIn.length; i++) {
      cbIn[i] = ycbcr(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], 1);
      crIn[i] = ycbcr(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], 2);
    }
    const cb = bicubicResize(cbIn, width, height, outW, outH), cr = bicubicResize(crIn, width, height, outW, outH);
    const [[r0, g0, b0], [r1, g1, b1], [r2, g2, b2]] = YCBCR_TO_RGB;
    const [y0, u0, v0] = YCBCR_OFFSET;
    for (let i = 0; i < plane; i++) {
      const y = output[i] * 255 - y0, u = cb[i] * 255 - u0, v = cr[i] * 255 - v0;
      pixels[4 * i] = toUint8(y * r0 + u * r1+ v * r2);
      pixels[4 * i + 1] = toUint8(y * g0 + u * g1+ v * g2);
      pixels[4 * i + 2] = toUint8(y * b0 + u * b1+ v * b2);
      pixels[4 * i + 3] = 255;
    }
  }
  if (picture.hasAlpha) {
    const { width, height, rgba } = picture;
    const alpha = new Float32Array(width * height);
    for (let i = 0; i < alpha.length; i++) alpha[i] = rgba[4 * i + 3] / 255;
    const resized = bicubicResize(alpha, width, height, outW, outH);
    for (let i = 0; i < plane; i++) pixels[i * 4 + 3] = toUint8(resized[i]);
  }
  return pixels;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length), view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) crc = CRC_TABLE[(crc ^ out[i]) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return out;
}

// A PNG of RGBA pixels. Opaque: the browser's own encoder (a canvas holds opaque pixels exactly). With alpha: written
// here, rows Up-filtered and zlib by the browser's CompressionStream (as runtime/images.write_png_rows), since a
// canvas premultiplies its pixels by alpha and would change the colour of translucent ones.
export async function encodePng(pixels, width, height, hasAlpha) {
  if (!hasAlpha) {
    const canvas = new OffscreenCanvas(width, height);
    canvas.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
    return canvas.convertToBlob({ type: "image/png" });
  }
  const stride = width * 4, raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 2;
    for (let x = 0; x < stride; x++) {
      const above = y ? pixels[(y - 1) * stride + x] : 0;
      raw[y * (stride + 1) + 1 + x] = (pixels[y * stride + x] - above) & 0xff;
    }
  }
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const header = new Uint8Array(13), view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 6, 0, 0, 0], 8);
  const signature = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Blob([signature, pngChunk("IHDR", header), pngChunk("IDAT", zlib), pngChunk("IEND", new Uint8Array(0))], { type: "image/png" });
}

// ---- tiles ----

function* spans(length, tile, overlap, minSize) {
  for (let start = 0; start < length; start += tile) {
    const end = Math.min(start + tile, length);
    let lo = Math.max(start - overlap, 0), hi = Math.min(end + overlap, length);
    while (hi - lo < Math.min(minSize, length)) {
      lo = Math.max(lo - 1, 0);
      hi = Math.min(hi + 1, length);
    }
    yield [start, end, lo, hi];
  }
}

// The network's output for the whole picture (float32 C×sH×sW), tile by tile (runtime/tiling.tiled_infer).
async function upscaleTensor(picture, model, tile, onTile) {
  const m = model.manifest, { width, height } = picture, s = m.scale, c = m.channels;
  if (width < m.min_size || height < m.min_size) {
    fail(`the image is ${width}×${height}, below this model's minimum ${m.min_size}×${m.min_size}: pass a larger image`);
  }
  const windowRun = (name, ya, yb, xa, xb) => model.run(name, windowInput(picture, m.colour, ya, yb, xa, xb), [1, c, yb - ya, xb - xa]);
  if (m.whole_image || tile <= 0 || (height <= tile && width <= tile)) {
    onTile(1, 1);
    return { data: (await windowRun("model", 0, height, 0, width)).data, tiles: 1 };
  }
  const r = m.receptive_radius;
  const rows = [...spans(height, tile, r, m.min_size)], columns = [...spans(width, tile, r, m.min_size)];
  let graph = "model";
  if (m.global_gate) {  // the gate's features summed over the tile cores: the whole image's mean, one decision
    let sum = null;
    for (const [y0, y1, ya, yb] of rows) {
      for (const [x0, x1, xa, xb] of columns) {
        const f = await windowRun("gate_features", ya, yb, xa, xb);
        const [, fc, fh, fw] = f.dims;
        sum = sum || new Float64Array(fc);
        for (let k = 0; k < fc; k++) {
          for (let y = y0 - ya; y < y1 - ya; y++) for (let x = x0 - xa; x < x1 - xa; x++) sum[k] += f.data[(k * fh + y) * fw + x];
        }
      }
    }
    const mean = Float32Array.from(sum, (v) => v / (width * height));
    const margin = await model.run("gate_margin", mean, [1, mean.length, 1, 1]);
    graph = margin.data[0] > 0 ? "branch1" : "branch0";
  }
  const outW = width * s, outH = height * s, out = new Float32Array(c * outW * outH);
  const total = rows.length * columns.length;
  let done = 0;
  for (const [y0, y1, ya, yb] of rows) {
    for (const [x0, x1, xa, xb] of columns) {
      onTile(++done, total);
      const patch = (await windowRun(graph, ya, yb, xa, xb)).data, pw = (xb - xa) * s, ph = (yb - ya) * s;
      for (let k = 0; k < c; k++) {
        for (let y = (y0 - ya) * s; y < (y1 - ya) * s; y++) {
          const from = (k * ph + y) * pw + (x0 - xa) * s;
          out.set(patch.subarray(from, from + (x1 - x0) * s), (k * outH + ya * s + y) * outW + x0 * s);
        }
      }
    }
  }
  return { data: out, tiles: total };
}

// An image upscaled end to end: decode → network (tiled) → colour → PNG; the PNG and the times in ms.
export async function upscaleBlob(blob, name, model, { tile, onTile = () => {} } = {}) {
  const m = model.manifest, t0 = performance.now();
  const picture = await decodePicture(blob, name, m.max_pixels);
  const t1 = performance.now();
  const { data, tiles } = await upscaleTensor(picture, model, tile ?? m.tile, onTile);
  const t2 = performance.now();
  const outW = picture.width * m.scale, outH = picture.height * m.scale;
  const pixels = outputPixels(picture, data, m.colour, outW, outH);
  const t3 = performance.now();
  const png = await encodePng(pixels, outW, outH, picture.hasAlpha);
  const t4 = performance.now();
  return { png, width: outW, height: outH, tiles, ms: { decode: t1 - t0, upscale: t2 - t1, colour: t3 - t2, png: t4 - t3, total: t4 - t0 } };
}

// ---- the page ----

function oneLine(e) {
  if (e instanceof SrError) return e.message;
  const text = String((e && e.message) || e).split("\n")[0].slice(0, 200);
  return `${(e && e.name) || "Error"}: ${text} (an error of the browser or onnxruntime-web): reload the page, or report it`;
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// index.html's behaviour. The contract for programs: ?image=URL upscales that image; when done the page holds
// <img id="srdeploy-output" src="data:image/png;base64,…"> and document.title begins with "done"; any failure shows
// one line in <p id="srdeploy-error"> and document.title begins with "error". Also: tile=N (0: whole image),
// backend=wasm|webgpu, threads=N, repeat=N (times each run in <pre id="srdeploy-report">).
export async function main() {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const status = (text) => { $("srdeploy-status").textContent = text; };
  const showError = (e) => {
    $("srdeploy-error").textContent = oneLine(e);
    $("srdeploy-error").hidden = false;
    document.title = `error: ${oneLine(e)}`;
  };
  window.addEventListener("error", (event) => { showError(event.error || event.message); event.preventDefault(); });
  window.addEventListener("unhandledrejection", (event) => { showError(event.reason); event.preventDefault(); });
  const integer = (key, fallback) => {
    const raw = params.get(key);
    if (raw === null) return fallback;
    if (!/^\d+$/.test(raw)) fail(`${key}=${raw} is not a whole number: pass ${key}=N`);
    return Number(raw);
  };
  let model;
  const run = async (blob, name) => {
    $("srdeploy-error").hidden = true;
    document.title = "working";
    $("srdeploy-input").src = URL.createObjectURL(blob);
    const repeat = Math.max(1, integer("repeat", 1)), times = [];
    let result;
    for (let i = 0; i < repeat; i++) {
      result = await upscaleBlob(blob, name, model, {
        tile: integer("tile", model.manifest.tile),
        onTile: (k, n) => status(`upscaling ${name}: tile ${k} of ${n}`),
      });
      times.push(result.ms);
    }
    const output = $("srdeploy-output");
    output.src = await dataUrl(result.png);
    await output.decode();
    const download = $("srdeploy-download");
    download.href = URL.createObjectURL(result.png);
    download.download = `${name.replace(/\.[^.]*$/, "")}_x${model.manifest.scale}.png`;
    download.hidden = false;
    $("srdeploy-report").textContent = JSON.stringify({
      model: model.manifest.model, scale: model.manifest.scale, precision: model.manifest.precision, backend: model.backend,
      threads: model.threads, isolated: model.isolated, width: result.width, height: result.height, tiles: result.tiles, times,
    });
    status(`${name}: ${result.width}×${result.height} in ${times[times.length - 1].total.toFixed(0)} ms (${result.tiles} tile${result.tiles > 1 ? "s" : ""})`);
    document.title = `done ${result.width}x${result.height}`;
  };
  const guarded = (work) => work().catch(showError);
  await guarded(async () => {
    document.title = "loading";
    const backend = params.get("backend") || "wasm";
    if (backend !== "wasm" && backend !== "webgpu") fail(`backend=${backend} is not one this page runs: pass backend=wasm or backend=webgpu`);
    status("checking the model and loading onnxruntime-web…");
    model = await loadModel(new URL(".", location.href), { backend, threads: integer("threads", 0) });
    const m = model.manifest;
    $("srdeploy-model").textContent = `${m.model} ×${m.scale} (${m.precision}), ${backend === "wasm" ? "WebAssembly" : "WebGPU"}, ` +
      `${model.threads} thread${model.threads > 1 ? "s" : ""}${model.isolated ? "" : " (serve with serve.py for threads: it sets COOP/COEP)"}`;
    status("ready: pick or drop an image");
    document.title = "ready";
    const image = params.get("image");
    if (image !== null) {
      const response = await fetch(new URL(image, location.href)).catch((e) => fail(`image ${image} cannot be fetched (${e.message}): check the URL (another origin must allow CORS)`));
      if (!response.ok) fail(`image ${image} cannot be fetched (HTTP ${response.status}): check the URL`);
      await run(await response.blob(), decodeURIComponent(new URL(image, location.href).pathname.split("/").pop() || "image"));
    }
  });
  const pick = (file) => file && model && guarded(() => run(file, file.name));
  $("srdeploy-file").addEventListener("change", (event) => pick(event.target.files[0]));
  const drop = $("srdeploy-drop");
  drop.addEventListener("dragover", (event) => event.preventDefault());
  drop.addEventListener("drop", (event) => { event.preventDefault(); pick(event.dataTransfer.files[0]); });
}
