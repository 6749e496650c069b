// sketchvae's Sketch-RNN decoder in plain JavaScript: runs a `.gen.json` model (Magenta's, or one
// written by `sketchvae export-web` with the sketchvae extension: encoder, latent z, classes) in the
// page, with no server, no libraries and no build step.  Also a CommonJS module for Node (the tests).
//
// What it computes is what sketchvae's PyTorch code computes (tests/test_export_web.py compares them):
// * the format and its int16 weights: sketchvae/interop/magenta.py (a weight is 10 * q / 32767);
// * the LSTM: TensorFlow's basic cell, gate blocks (i, j, f, o), forget bias 1.0 inside the sigmoid;
// * the mixture density: [3 pen logits | pi | mu_x | mu_y | sigma_x | sigma_y | rho], M each;
// * temperatures: the three conventions of sketchvae/distributions.py ("paper", "magenta", "magenta-js");
// * sampling as sketchvae/sample.py's `draw`: inverse-CDF choices from two uniforms, the Cholesky pair
//   from two normals, with a seeded generator (not torch's: same distribution, other numbers).
// Sketches go in and out as stroke-3 rows [dx, dy, pen_lifted] in the model's data units (offsets
// are divided by the model's scale_factor before the network sees them, as in sample.py).
"use strict";

(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.SketchRNNDecoder = api;
})(typeof self !== "undefined" ? self : this, function () {
  const MAX_WEIGHT = 10.0;
  const INT16_SCALE = 32767;
  const FORGET_BIAS = 1.0;
  const EXTENSION_KEY = "sketchvae";
  const EXTENSION_FORMAT = 1;
  const OFFSET_LIMIT = 1000;        // data units; sketchvae/strokes.py OFFSET_LIMIT (model_input clamps)
  const START = [0, 0, 1, 0, 0];    // the start token
  const MAGENTA_NAMES = ["output kernel", "output bias", "LSTM input kernel", "LSTM recurrent kernel", "LSTM bias"];

  function fail(where, message) { throw new Error(`${where}: ${message}`); }

  // ------------------------------------------------------------------------------------ the file
  function decodeInt16(b64, count, where, name) {
    let bin;
    try { bin = atob(b64); } catch (_) { fail(where, `weight ${name} is not valid base64`); }
    if (bin.length !== 2 * count) {
      fail(where, `weight ${name} holds ${bin.length / 2} int16 values but its dims need ${count}`);
    }
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      let q = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      if (q >= 32768) q -= 65536;
      out[i] = (MAX_WEIGHT * q) / INT16_SCALE;  // float64 product, rounded once to float32: as magenta-js
    }
    return out;
  }

  // A `.gen.json` value [info, dims, strings] -> a model object.  Errors name `where` and the field.
  function parseModel(json, where = "model") {
    if (!Array.isArray(json) || json.length !== 3) fail(where, "not a .gen.json model: expected [info, weight_dims, weight_strings]");
    const [info, dims, strings] = json;
    if (!info || typeof info !== "object") fail(where, "info (item 0) must be an object");
    if (info.version !== 6) fail(where, `unknown .gen.json version ${info.version}; this page reads version 6`);
    if (!(info.scale_factor > 0)) fail(where, `info scale_factor=${info.scale_factor} must be > 0`);
    const ext = info[EXTENSION_KEY] || null;
    if (ext && ext.format !== EXTENSION_FORMAT) {
      fail(where, `info.${EXTENSION_KEY}.format ${ext.format} is unknown; this page reads format ${EXTENSION_FORMAT}`);
    }
    const mode = ext ? ext.mode : "decoder";
    if (!["decoder", "vae", "class_vae"].includes(mode)) fail(where, `info.${EXTENSION_KEY}.mode ${mode} is unknown`);
    if (ext && ext.cell && ext.cell !== "lstm") fail(where, `cell ${ext.cell}: this page runs plain LSTMs only`);
    const names = MAGENTA_NAMES.concat(ext ? ext.arrays || [] : []);
    if (!Array.isArray(dims) || dims.length !== names.length || !Array.isArray(strings) || strings.length !== names.length) {
      fail(where, `expected ${names.length} weight arrays (${names.join(", ")})`);
    }
    const w = {};
    const shape = {};
    names.forEach((name, k) => {
      const count = dims[k].reduce((a, b) => a * b, 1);
      w[name] = decodeInt16(strings[k], count, where, name);
      shape[name] = dims[k];
    });
    const H = dims[0][0];
    const out = dims[0][1];
    const M = (out - 3) / 6;
    if (!Number.isInteger(M) || M < 1) fail(where, `output width ${out} is not 3 + 6M`);
    if (dims[2][0] !== 5 || dims[2][1] !== 4 * H || dims[3][0] !== H || dims[3][1] !== 4 * H || dims[4][0] !== 4 * H) {
      fail(where, `weight_dims ${JSON.stringify(dims.slice(0, 5))} do not fit an LSTM of ${H} units`);
    }
    const model = {
      name: info.name || "model", info, mode, H, M, scale: info.scale_factor, maxLen: info.max_seq_len,
      classes: ext && ext.classes ? ext.classes.slice() : [],
      convention: ext && ext.convention ? ext.convention : "magenta-js",  // Magenta's own files: magenta-js's
      outK: w["output kernel"], outB: w["output bias"],
      dec: { inK: w["LSTM input kernel"], recK: w["LSTM recurrent kernel"], bias: w["LSTM bias"], H },
    };
    if (mode !== "decoder") {
      const Z = ext.z_size;
      const He = ext.enc_rnn_size;
      const E = mode === "class_vae" ? ext.class_embed_size : 0;
      if (shape["decoder z kernel"][0] !== Z || shape["mu bias"][0] !== Z) fail(where, `z_size ${Z} does not fit the arrays`);
      Object.assign(model, {
        Z, He, E,
        zK: w["decoder z kernel"], initK: w["initial state kernel"], initB: w["initial state bias"],
        muK: w["mu kernel"], muB: w["mu bias"], psK: w["presig kernel"], psB: w["presig bias"],
        enc: ["forward", "backward"].map((d) => ({
          inK: w[`encoder ${d} input kernel`], recK: w[`encoder ${d} recurrent kernel`], bias: w[`encoder ${d} bias`], H: He,
        })),
      });
      if (mode === "class_vae") {
        model.eK = w["decoder class kernel"];
        model.embed = w["class embedding"];
        model.genClass = Math.max(0, model.classes.indexOf(ext.gen && ext.gen.class));
      }
    }
    return model;
  }

  // ------------------------------------------------------------------------------------ arithmetic
  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // out (n) += x (k) @ K (k, n), rows with x[i] = 0 skipped (stroke inputs are mostly zeros)
  function addVecMat(out, x, K, n) {
    for (let i = 0; i < x.length; i++) {
      const xi = x[i];
      if (xi === 0) continue;
      const row = i * n;
      for (let j = 0; j < n; j++) out[j] += xi * K[row + j];
    }
    return out;
  }

  // outs[b] (n) += xs[b] (k) @ K (k, n) for every b: each row of K is read once for the whole batch
  // (the kernels do not fit in the CPU's caches; the rows do).  Same sums in the same order as addVecMat.
  function addBatchMat(outs, xs, K, n) {
    const k = xs.length ? xs[0].length : 0;
    for (let i = 0; i < k; i++) {
      const row = i * n;
      for (let b = 0; b < xs.length; b++) {
        const xi = xs[b][i];
        if (xi === 0) continue;
        const out = outs[b];
        for (let j = 0; j < n; j++) out[j] += xi * K[row + j];
      }
    }
  }

  // TensorFlow's basic LSTM cell for a batch: g = x @ inK + h @ recK + bias, blocks (i, j, f, o).
  // states: [{c, h, bias}] (bias: the sketch's own, z and class folded in; default the cell's);
  // xs: one input row each.  Returns the new states.
  function lstmBatch(cell, states, xs) {
    const H = cell.H;
    const gates = states.map((st) => Float64Array.from(st.bias || cell.bias));
    addBatchMat(gates, xs, cell.inK, 4 * H);
    addBatchMat(gates, states.map((st) => st.h), cell.recK, 4 * H);
    return states.map((st, b) => {
      const g = gates[b];
      const c1 = new Float64Array(H);
      const h1 = new Float64Array(H);
      for (let k = 0; k < H; k++) {
        c1[k] = st.c[k] * sigmoid(g[2 * H + k] + FORGET_BIAS) + sigmoid(g[k]) * Math.tanh(g[H + k]);
        h1[k] = Math.tanh(c1[k]) * sigmoid(g[3 * H + k]);
      }
      return { bias: st.bias, c: c1, h: h1 };
    });
  }

  // one sketch, one step: the new [c, h]
  function lstmStep(cell, x, c, h, bias) {
    const [st] = lstmBatch(cell, [{ c, h, bias }], [x]);
    return [st.c, st.h];
  }

  function softmax(logits, t) {
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v / t);
    const e = logits.map((v) => Math.exp(v / t - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  }

  // (discrete temperature, sigma multiplier) of tau: sketchvae/distributions.py temperature_scales
  function temperatureScales(tau, convention) {
    if (!(tau > 0)) throw new Error(`temperature must be > 0, got ${tau}`);
    if (convention === "paper") return [tau, Math.sqrt(tau)];
    if (convention === "magenta") return [tau, tau];
    if (convention === "magenta-js") return [0.5 + 0.5 * tau, Math.sqrt(tau)];
    throw new Error(`unknown temperature convention ${convention}; choose from paper, magenta, magenta-js`);
  }

  // The tempered distribution of the next point from the decoder's h: {pi, muX, muY, sigmaX, sigmaY,
  // corr, pen} (M, ..., 3 numbers), as magenta-js's getPDF for the "magenta-js" convention.
  function pdf(model, h, tau, convention = model.convention) {
    const M = model.M;
    const y = addVecMat(Float64Array.from(model.outB), h, model.outK, 3 + 6 * M);
    const [tDiscrete, sigmaScale] = temperatureScales(tau, convention);
    const part = (k) => Array.from(y.subarray(3 + k * M, 3 + (k + 1) * M));
    return {
      pen: softmax(Array.from(y.subarray(0, 3)), tDiscrete),
      pi: softmax(part(0), tDiscrete),
      muX: part(1), muY: part(2),
      sigmaX: part(3).map((v) => Math.exp(v) * sigmaScale),
      sigmaY: part(4).map((v) => Math.exp(v) * sigmaScale),
      corr: part(5).map(Math.tanh),
    };
  }

  // ------------------------------------------------------------------------------------ randomness
  // A seeded generator: sfc32 (32-bit state words from the seed by splitmix32), uniforms in [0, 1)
  // with 32 random bits, normals by Box-Muller.  seed: a number (taken mod 2^32) or null (random).
  function rng(seed) {
    let s = seed === null || seed === undefined ? Math.floor(Math.random() * 4294967296) : Number(seed) % 4294967296;
    const split = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    let a = split(), b = split(), c = split(), d = split();
    const uniform = () => {
      const t = (((a + b) | 0) + d) | 0;
      d = (d + 1) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = (c << 21) | (c >>> 11);
      c = (c + t) | 0;
      return (t >>> 0) / 4294967296;
    };
    let spare = null;
    const normal = () => {
      if (spare !== null) { const v = spare; spare = null; return v; }
      let u = 0;
      while (u === 0) u = uniform();
      const r = Math.sqrt(-2 * Math.log(u));
      const th = 2 * Math.PI * uniform();
      spare = r * Math.sin(th);
      return r * Math.cos(th);
    };
    for (let k = 0; k < 8; k++) uniform();
    return { uniform, normal };
  }

  // index drawn from probabilities p with a uniform u: the first k whose cdf exceeds u (sample.py)
  function inverseCdf(p, u) {
    let acc = 0;
    for (let k = 0; k < p.length; k++) { acc += p[k]; if (acc > u) return k; }
    return p.length - 1;
  }

  // One sampling step (sample.py `draw`): noise = [u_component, u_pen, e1, e2] -> stroke-5 row in
  // normalised units
  function draw(p, noise) {
    const k = inverseCdf(p.pi, noise[0] * p.pi.reduce((a, b) => a + b, 0));
    const pen = inverseCdf(p.pen, noise[1] * p.pen.reduce((a, b) => a + b, 0));
    const sx = p.sigmaX[k], sy = p.sigmaY[k], rho = p.corr[k];
    const dx = p.muX[k] + sx * noise[2];
    const dy = p.muY[k] + sy * (rho * noise[2] + Math.sqrt(Math.max(0, 1 - rho * rho)) * noise[3]);
    const row = [dx, dy, 0, 0, 0];
    row[2 + pen] = 1;
    return row;
  }

  // ------------------------------------------------------------------------------------ the model
  function classIndex(model, cls) {
    if (model.mode !== "class_vae") {
      if (cls !== null && cls !== undefined) throw new Error(`model ${model.name} (mode ${model.mode}) has no classes`);
      return null;
    }
    const k = typeof cls === "number" ? cls : model.classes.indexOf(cls);
    if (!(k >= 0 && k < model.classes.length)) {
      throw new Error(`unknown class ${cls} for model ${model.name}; its classes: ${model.classes.join(", ")}`);
    }
    return k;
  }

  const embedding = (model, k) => model.embed.subarray(k * model.E, (k + 1) * model.E);

  // stroke-3 rows in data units -> stroke-5 rows the network reads (clamped, / scale_factor)
  function toInput(model, s3) {
    return s3.map(([dx, dy, lifted]) => {
      const c = (v) => Math.max(-OFFSET_LIMIT, Math.min(OFFSET_LIMIT, v)) / model.scale;
      return [c(dx), c(dy), lifted ? 0 : 1, lifted ? 1 : 0, 0];
    });
  }

  // The decoder for one sketch: its LSTM bias (z and class folded in) and initial state.
  // z: null for decoder-only models (zero state, as magenta-js).
  function decoderFor(model, z, cls) {
    const k = classIndex(model, cls);
    if (model.mode === "decoder") {
      return { bias: model.dec.bias, c: new Float64Array(model.H), h: new Float64Array(model.H) };
    }
    if (!z || z.length !== model.Z) throw new Error(`model ${model.name} (mode ${model.mode}) needs z of size ${model.Z}`);
    const H = model.H;
    const bias = Float64Array.from(model.dec.bias);  // the gen part: z = 0 (and class gen.class)
    addVecMat(bias, z, model.zK, 4 * H);
    let zin = Array.from(z);
    if (k !== null) {
      const e = embedding(model, k);
      const g = embedding(model, model.genClass);
      addVecMat(bias, Array.from(e, (v, i) => v - g[i]), model.eK, 4 * H);
      zin = zin.concat(Array.from(e));
    }
    const init = addVecMat(Float64Array.from(model.initB), zin, model.initK, 2 * H).map(Math.tanh);
    return { bias, h: init.slice(0, H), c: init.slice(H) };  // [h0; c0] = tanh(W [z; e] + b)
  }

  // Feed stroke-5 rows (normalised) to decoder states, the same rows to each; returns the new states.
  function feedAll(model, states, rows) {
    for (const x of rows) states = lstmBatch(model.dec, states, states.map(() => x));
    return states;
  }

  const feed = (model, state, rows) => feedAll(model, [state], rows)[0];

  // q(z | sketch[, class]): {mu, sigma} (Z each) of a stroke-3 sketch in data units (sample.py encode)
  function encode(model, s3, cls) {
    if (model.mode === "decoder") throw new Error(`model ${model.name} (mode decoder) has no encoder`);
    const k = classIndex(model, cls);
    const e = k === null ? [] : Array.from(embedding(model, k));
    const rows = toInput(model, s3).map((r) => r.concat(e));
    if (rows.length) rows[rows.length - 1][2] = 0, rows[rows.length - 1][3] = 1;  // ends with a pen lift
    const final = (cell, seq) => {
      let c = new Float64Array(cell.H), h = new Float64Array(cell.H);
      for (const x of seq) [c, h] = lstmStep(cell, x, c, h);
      return h;
    };
    const hidden = Array.from(final(model.enc[0], rows)).concat(Array.from(final(model.enc[1], rows.slice().reverse())));
    const mu = addVecMat(Float64Array.from(model.muB), hidden, model.muK, model.Z);
    const presig = addVecMat(Float64Array.from(model.psB), hidden, model.psK, model.Z);
    return { mu: Array.from(mu), sigma: Array.from(presig, (v) => Math.exp(0.5 * v)), presig: Array.from(presig) };
  }

  const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

  // Batched decoding (sample.py `_run`): sketches advance together from their states and previous
  // rows; noise(t) gives one [u, u, e, e] per sketch (drawn for all, used by those still drawing).
  // Returns stroke-3 rows in data units per sketch.  opts.signal (AbortSignal) stops it between steps;
  // it yields to the page every `yieldEvery` steps so drawing stays responsive.
  async function run(model, states, prevs, steps, temperature, noise, opts = {}) {
    const out = states.map(() => []);
    const alive = states.map((_, i) => i);
    const yieldEvery = opts.yieldEvery || 0;
    for (let t = 0; t < steps && alive.length; t++) {
      if (yieldEvery && t % yieldEvery === yieldEvery - 1) await tick();
      if (opts.signal && opts.signal.aborted) throw new DOMException("aborted", "AbortError");
      const draws = noise(t);
      lstmBatch(model.dec, alive.map((i) => states[i]), alive.map((i) => prevs[i])).forEach((st, a) => { states[alive[a]] = st; });
      for (let a = alive.length - 1; a >= 0; a--) {
        const i = alive[a];
        const row = draw(pdf(model, states[i].h, temperature, opts.convention), draws[i]);
        if (row[4] === 1) { alive.splice(a, 1); continue; }
        out[i].push([row[0] * model.scale, row[1] * model.scale, row[3]]);
        prevs[i] = row;
      }
    }
    for (const s of out) if (s.length) s[s.length - 1][2] = 1;
    return out;
  }

  const independent = (gen, n) => () => Array.from({ length: n }, () => [gen.uniform(), gen.uniform(), gen.normal(), gen.normal()]);

  // n sketches from nothing (z ~ N(0, I) for vae models).  opts: {temperature, classes (one per
  // sketch, class_vae), z (one per sketch), seed, maxLen, signal}
  async function sample(model, n, opts = {}) {
    const gen = rng(opts.seed);
    const tau = opts.temperature ?? 0.4;
    const states = [];
    for (let i = 0; i < n; i++) {
      const z = model.mode === "decoder" ? null
        : (opts.z ? opts.z[i] : Array.from({ length: model.Z }, () => gen.normal()));
      states.push(decoderFor(model, z, opts.classes ? opts.classes[i] : null));
    }
    const noise = opts.sharedNoise ? ((draws) => (t) => { while (draws.length <= t) draws.push([gen.uniform(), gen.uniform(), gen.normal(), gen.normal()]); return states.map(() => draws[t]); })([])
      : independent(gen, n);
    return run(model, states, states.map(() => START.slice()), opts.maxLen || model.maxLen, tau, noise, opts);
  }

  // n continuations of a stroke-3 sketch in data units (sample.py `complete`, z from q(z | partial)):
  // each only the continuation, its first row the offset from the sketch's last point.
  async function complete(model, partial, n, opts = {}) {
    const gen = rng(opts.seed);
    const tau = opts.temperature ?? 0.4;
    const cls = opts.cls ?? null;
    const maxLen = opts.maxLen || model.maxLen;
    if (partial.length >= maxLen) throw new Error(`the drawing has ${partial.length} points; the model draws at most ${maxLen}`);
    const post = model.mode === "decoder" ? null : encode(model, partial, cls);
    const rows = toInput(model, partial);
    rows[rows.length - 1][2] = 0; rows[rows.length - 1][3] = 1;
    const starts = [];
    for (let i = 0; i < n; i++) {
      const z = post ? post.mu.map((m, k) => m + post.sigma[k] * gen.normal()) : null;
      starts.push(decoderFor(model, z, cls));
    }
    const states = feedAll(model, starts, [START].concat(rows.slice(0, -1)));  // teacher forcing
    const prevs = states.map(() => rows[rows.length - 1].slice());
    return run(model, states, prevs, maxLen - partial.length, tau, independent(gen, n), opts);
  }

  // spherical interpolation from a to b, `steps` vectors inclusive (sample.py `interpolate`)
  function slerp(a, b, steps) {
    const dot = (u, v) => u.reduce((s, x, i) => s + x * v[i], 0);
    const na = Math.sqrt(dot(a, a)), nb = Math.sqrt(dot(b, b));
    const ts = Array.from({ length: steps }, (_, k) => (steps > 1 ? k / (steps - 1) : 0));
    if (na > 0 && nb > 0) {
      const omega = Math.acos(Math.max(-1, Math.min(1, dot(a, b) / (na * nb))));
      const so = Math.sin(omega);
      if (so > 1e-6) return ts.map((t) => a.map((x, i) => (Math.sin((1 - t) * omega) / so) * x + (Math.sin(t * omega) / so) * b[i]));
    }
    return ts.map((t) => a.map((x, i) => (1 - t) * x + t * b[i]));
  }

  // `steps` sketches decoded along the slerp between the posterior means of a and b, the same
  // random draws at every step (sample.py `interpolation_strip`)
  async function interpolate(model, a, b, steps, opts = {}) {
    if (model.mode !== "vae") throw new Error(`model ${model.name} is a ${model.mode} model; interpolation needs a vae model`);
    const zs = slerp(encode(model, a).mu, encode(model, b).mu, steps);
    return sample(model, steps, { ...opts, z: zs, sharedNoise: true });
  }

  return {
    parseModel, lstmStep, lstmBatch, pdf, draw, rng, encode, decoderFor, feed, toInput, sample, complete, interpolate, slerp,
    temperatureScales, START,
  };
});
