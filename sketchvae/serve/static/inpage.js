// The page's "in-page" adapter: answers the page's API calls (/api/models, /api/complete,
// /api/sample, /api/interpolate) in the page itself, with the models that `sketchvae export-web`
// registered (window.SKETCHVAE_MODELS) and the decoder of sketchrnn.js, so the page needs no server.
// `sketchvae serve` does not load this file: there app.js talks to the server (the "server" adapter).
//
// Page pixels <-> model units as sketchvae/serve/engine.py does it (its settings come from
// models/page.js, written by export-web; each model's units_per_px was measured there): strokes
// simplified with RDP, the first row (the offset from the canvas corner) dropped on the way in and
// put back on the way out, whole drawings centred on the canvas.
"use strict";

(() => {
  const registered = window.SKETCHVAE_MODELS;
  const D = window.SketchRNNDecoder;
  if (!Array.isArray(registered) || !D) return;  // not an exported page: app.js uses the server
  const P = window.SKETCHVAE_PAGE;
  const parsed = new Map();  // name -> decoder model, parsed on first use

  const fail = (field, message, status = 400) => {
    const err = new Error(`${field}: ${message}`);
    err.field = field; err.status = status;
    throw err;
  };

  function entry(name) {
    const e = registered.find((m) => m.name === name);
    if (!e) fail("model", `unknown model ${JSON.stringify(name)}; this page has: ${registered.map((m) => m.name).join(", ")}`);
    if (!parsed.has(name)) parsed.set(name, D.parseModel(e.model, e.file));
    return { e, model: parsed.get(name) };
  }

  function checkClass(e, cls, required) {
    if (!e.classes.length) {
      if (cls !== undefined && cls !== null) fail("class", `model ${e.name} (mode ${e.mode}) has no classes; leave 'class' out`);
      return null;
    }
    if (cls === undefined || cls === null) {
      if (required) fail("class", `model ${e.name} is class-conditional; choose one of: ${e.classes.join(", ")}`);
      return null;
    }
    if (!e.classes.includes(cls)) fail("class", `unknown class ${cls} for model ${e.name}; its classes: ${e.classes.join(", ")}`);
    return cls;
  }

  const unitsPerPx = (e, cls) => e.unitsPerPx[cls === null || cls === undefined ? "" : cls];

  // ---------------------------------------------------------------------------------- geometry (engine.py)
  // Ramer-Douglas-Peucker, iterative, keeps both ends (sketchvae/strokes.py rdp)
  function rdp(pts, eps) {
    const n = pts.length;
    if (n < 3) return pts.slice();
    const keep = new Array(n).fill(false);
    keep[0] = keep[n - 1] = true;
    const stack = [[0, n - 1]];
    while (stack.length) {
      const [a, b] = stack.pop();
      if (b - a < 2) continue;
      const sx = pts[b][0] - pts[a][0], sy = pts[b][1] - pts[a][1];
      const norm = Math.hypot(sx, sy);
      let best = -1, far = -1;
      for (let k = a + 1; k < b; k++) {
        const rx = pts[k][0] - pts[a][0], ry = pts[k][1] - pts[a][1];
        const d = norm === 0 ? Math.hypot(rx, ry) : Math.abs(sx * ry - sy * rx) / norm;
        if (d > far) { far = d; best = k; }
      }
      if (far > eps) { keep[best] = true; stack.push([a, best], [best, b]); }
    }
    return pts.filter((_, k) => keep[k]);
  }

  function polylines(rows) {  // stroke-3 from the origin -> absolute polylines
    const polys = [];
    let cur = [], x = 0, y = 0;
    for (const [dx, dy, lifted] of rows) {
      x += dx; y += dy;
      cur.push([x, y]);
      if (lifted > 0.5) { polys.push(cur); cur = []; }
    }
    if (cur.length) polys.push(cur);
    return polys;
  }

  function fromPolylines(polys) {  // absolute polylines -> stroke-3, first row from the origin
    const rows = [];
    let px = 0, py = 0;
    for (const p of polys) p.forEach(([x, y], i) => { rows.push([x - px, y - py, i === p.length - 1 ? 1 : 0]); px = x; py = y; });
    return rows;
  }

  // engine.page_to_model: page drawing -> the model's stroke-3 (data units) from the first point
  function pageToModel(strokes, upp) {
    const polys = polylines(strokes).map((p) => rdp(p, P.rdpEpsilonPx));
    const s3 = fromPolylines(polys);
    let rows = s3[0][2] > 0.5 ? [[0, 0, 1]].concat(s3.slice(1)) : s3.slice(1);
    if (!rows.length) rows = [[0, 0, 1]];
    rows = rows.map(([dx, dy, p]) => [dx * upp, dy * upp, p]);
    rows[rows.length - 1][2] = 1;
    return rows;
  }

  const round = (v) => { const f = 10 ** P.decimals; return Math.round(v * f) / f; };
  const toJson = (s3) => s3.map(([dx, dy, p]) => [round(dx), round(dy), p > 0.5 ? 1 : 0]);
  const toPage = (s3, upp) => s3.map(([dx, dy, p]) => [dx / upp, dy / upp, p]);

  function centred(s3) {  // engine.centred
    if (!s3.length) return [];
    let x = 0, y = 0, x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    for (const [dx, dy] of s3) {
      x += dx; y += dy;
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
    return [[P.canvas / 2 - (x0 + x1) / 2, P.canvas / 2 - (y0 + y1) / 2, 0]].concat(s3);
  }

  const seedOf = (body) => (body.seed === undefined || body.seed === null ? null : body.seed);

  // ---------------------------------------------------------------------------------- the endpoints
  const endpoints = {
    async "/api/complete"(body, signal) {
      const { e, model } = entry(body.model);
      const cls = checkClass(e, body.class, true);
      const upp = unitsPerPx(e, cls);
      const prefix = pageToModel(body.strokes, upp);
      const maxLen = prefix.length + Math.max(model.maxLen - prefix.length, P.minContinuation);
      const tails = await D.complete(model, prefix, body.n, {
        temperature: body.temperature, cls, seed: seedOf(body), maxLen, signal, yieldEvery: 4,
      });
      return tails.map((t) => toJson(toPage(t, upp)));
    },
    async "/api/sample"(body, signal) {
      const { e, model } = entry(body.model);
      const cls = checkClass(e, body.class, false);
      const classes = Array.from({ length: body.n }, (_, i) => (cls !== null ? cls : e.classes.length ? e.classes[i % e.classes.length] : null));
      const sketches = await D.sample(model, body.n, {
        temperature: body.temperature, classes: e.classes.length ? classes : null, seed: seedOf(body), signal, yieldEvery: 4,
      });
      return sketches.map((s, i) => toJson(centred(toPage(s, unitsPerPx(e, classes[i])))));
    },
    async "/api/interpolate"(body, signal) {
      const { e, model } = entry(body.model);
      if (e.mode !== "vae") fail("model", `model ${e.name} is a '${e.mode}' model; interpolation needs a 'vae' model`);
      const upp = unitsPerPx(e, null);
      const strip = await D.interpolate(model, pageToModel(body.a, upp), pageToModel(body.b, upp), body.steps, {
        temperature: body.temperature, seed: seedOf(body), signal, yieldEvery: 4,
      });
      return strip.map((s) => toJson(centred(toPage(s, upp))));
    },
  };

  // The adapter app.js calls: models() and request(path, body, signal) -> {ok, status, data}
  window.SketchvaeInPage = {
    inPage: true,
    models: async () => registered.map((m) => ({ name: m.name, mode: m.mode, classes: m.classes.slice() })),
    async request(path, body, signal) {
      const handler = endpoints[path];
      if (!handler) return { ok: false, status: 404, data: { error: `path: no such endpoint ${path}`, field: "path" } };
      try {
        await new Promise((resolve) => setTimeout(resolve, 0));  // let the page paint "Thinking..." first
        return { ok: true, status: 200, data: { sketches: await handler(body, signal) } };
      } catch (err) {
        if (err.name === "AbortError") throw err;
        return { ok: false, status: err.status || 400, data: { error: err.message, field: err.field || "request" } };
      }
    },
    // exposed for tests
    pageToModel, centred,
  };
})();
