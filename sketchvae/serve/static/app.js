// sketchvae's drawing page, for `sketchvae serve` and `sketchvae export-web` alike.  Plain
// JavaScript, no libraries, no build step.
//
// A drawing is kept as strokes of absolute points in page pixels on a CANVAS x CANVAS area; the API
// speaks stroke-3 [[dx, dy, pen_lifted], ...] whose first row is the first point's offset from the
// canvas's top-left corner (completions: the first row is the offset from the drawing's last point).
//
// Who answers the API (`backend` below): the server (`sketchvae serve`: fetch), or, in a page written
// by `sketchvae export-web`, the models in the page itself (inpage.js, which sets
// window.SketchvaeInPage before this file runs).  Both take the same requests and give the same answers.
"use strict";

(() => {
  const CANVAS = 480;              // page pixels; the same as sketchvae/serve/engine.py CANVAS
  const INK = "#1f2328";           // your strokes
  const MODEL_INK = "#e4572e";     // the model's strokes
  const GHOST = "#c3bcae";         // your drawing behind a suggestion
  const MIN_STEP = 1.5;            // page px between recorded pointer points
  const POINTS_PER_FRAME = 3;      // animation speed of suggestions
  const LINE = 3;                  // page px, line width on the main canvas

  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), cls: $("class"), clsLabel: $("class-label"), temperature: $("temperature"),
    temperatureValue: $("temperature-value"), count: $("count"), canvas: $("canvas"), hint: $("hint"),
    status: $("status"), error: $("error"), errorText: $("error-text"), suggestions: $("suggestions"),
    suggestionsTitle: $("suggestions-title"), suggestionsHelp: $("suggestions-help"), interpBody: $("interp-body"),
    interpHelp: $("interp-help"), steps: $("steps"), strip: $("strip"), slotA: $("slot-a"), slotB: $("slot-b"),
  };
  // ?seed=N makes every answer reproducible (request k uses seed N + k): for screenshots and tests
  const seedParam = new URLSearchParams(window.location.search).get("seed");
  let nextSeed = seedParam !== null && /^\d+$/.test(seedParam) ? Number(seedParam) : null;
  const state = {
    models: [],
    strokes: [],            // [{points: [[x, y], ...], by: "you" | "model"}]
    history: [],            // earlier `strokes` arrays, for undo
    current: null,          // the stroke being drawn
    channels: {},           // name -> {seq, controller}: one request in flight per channel
    slots: { a: null, b: null },  // interpolation ends: arrays of polylines
  };

  // ---------------------------------------------------------------------------------- geometry
  const round2 = (v) => Math.round(v * 100) / 100;

  function toStroke3(polys) {
    const rows = [];
    let px = 0, py = 0;
    for (const poly of polys) {
      poly.forEach(([x, y], i) => {
        rows.push([round2(x - px), round2(y - py), i === poly.length - 1 ? 1 : 0]);
        px = x; py = y;
      });
    }
    return rows;
  }

  function toPolylines(rows, origin) {
    const polys = [];
    let cur = [];
    let [x, y] = origin;
    for (const [dx, dy, lifted] of rows) {
      x += dx; y += dy;
      cur.push([x, y]);
      if (lifted) { polys.push(cur); cur = []; }
    }
    if (cur.length) polys.push(cur);
    return polys;
  }

  const drawingPolys = () => state.strokes.map((s) => s.points);
  const lastPoint = () => {
    const s = state.strokes[state.strokes.length - 1];
    return s.points[s.points.length - 1];
  };
  const countPoints = (polys) => polys.reduce((a, p) => a + p.length, 0);

  // the square (page px) to show: around every point with a margin, at least `minSize` wide; with
  // withCanvas, the canvas square is always inside (the drawing keeps its place)
  function viewBox(polyGroups, { withCanvas = false, minSize = CANVAS / 2 } = {}) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const polys of polyGroups) {
      for (const p of polys) {
        for (const [x, y] of p) {
          x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
        }
      }
    }
    if (x0 === Infinity) { x0 = 0; y0 = 0; x1 = CANVAS; y1 = CANVAS; }
    if (withCanvas) { x0 = Math.min(x0, 0); y0 = Math.min(y0, 0); x1 = Math.max(x1, CANVAS); y1 = Math.max(y1, CANVAS); }
    const size = Math.max(x1 - x0, y1 - y0, minSize) * (withCanvas ? 1.0 : 1.16);
    return { x: (x0 + x1 - size) / 2, y: (y0 + y1 - size) / 2, size };
  }

  // ---------------------------------------------------------------------------------- painting
  function fitBackingStore(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    return dpr;
  }

  function strokePolys(ctx, polys, color, width, limit = Infinity) {
    ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = width;
    ctx.lineCap = "round"; ctx.lineJoin = "round";
    let left = limit;
    for (const p of polys) {
      if (left <= 0) break;
      const n = Math.min(p.length, left);
      left -= n;
      if (p.length === 1) {
        ctx.beginPath(); ctx.arc(p[0][0], p[0][1], width * 0.7, 0, 2 * Math.PI); ctx.fill();
        continue;
      }
      if (n < 2) continue;
      ctx.beginPath();
      ctx.moveTo(p[0][0], p[0][1]);
      for (let i = 1; i < n; i++) ctx.lineTo(p[i][0], p[i][1]);
      ctx.stroke();
    }
  }

  // layers: [{polys, color, limit?}]; box: the page-pixel square shown; widthCss: line width in CSS px
  function paint(canvas, layers, box, widthCss) {
    const dpr = fitBackingStore(canvas);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const scale = canvas.width / box.size;
    ctx.setTransform(scale, 0, 0, scale, -box.x * scale, -box.y * scale);
    for (const layer of layers) strokePolys(ctx, layer.polys, layer.color, (widthCss * dpr) / scale, layer.limit);
  }

  function redraw() {
    const layers = [];
    for (const s of state.strokes) layers.push({ polys: [s.points], color: s.by === "model" ? MODEL_INK : INK });
    if (state.current) layers.push({ polys: [state.current.points], color: INK });
    const cssScale = ui.canvas.clientWidth / CANVAS;
    paint(ui.canvas, layers, { x: 0, y: 0, size: CANVAS }, LINE * cssScale);
    ui.hint.hidden = state.strokes.length > 0 || state.current !== null;
    $("undo").disabled = state.history.length === 0;
    $("clear").disabled = state.strokes.length === 0;
    $("download").disabled = state.strokes.length === 0;
  }

  // ---------------------------------------------------------------------------------- animation
  const animations = new Set();
  let frame = 0;

  function animate(item) {
    item.shown = 0;
    animations.add(item);
    if (!frame) frame = requestAnimationFrame(tick);
  }

  function tick() {
    frame = 0;
    for (const item of animations) {
      item.shown = Math.min(item.total, item.shown + POINTS_PER_FRAME);
      item.draw(item.shown);
      item.el.dataset.drawn = String(item.shown);
      if (item.shown >= item.total) {
        animations.delete(item);
        item.el.dataset.done = "true";
      }
    }
    if (animations.size) frame = requestAnimationFrame(tick);
  }

  function stopAnimations(container) {
    for (const item of [...animations]) if (container.contains(item.el)) animations.delete(item);
  }

  // a clickable tile that animates `polys` (over `under`, drawn at once in GHOST)
  function tile(container, { polys, under = [], label = "", onPick }) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tile";
    button.title = "Keep this one";
    const canvas = document.createElement("canvas");
    button.append(canvas);
    const total = countPoints(polys);
    const text = total === 0 ? `${label ? label + " \u00b7 " : ""}stopped at once` : label;
    if (text) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = text;
      button.append(tag);
    }
    button.addEventListener("click", onPick);
    container.append(button);
    const box = viewBox([polys, under]);
    button.dataset.points = String(total);
    const draw = (shown) => paint(canvas, [
      { polys: under, color: GHOST },
      { polys, color: MODEL_INK, limit: shown },
    ], box, 2);
    draw(0);
    if (total === 0) {
      button.dataset.drawn = "0";
      button.dataset.done = "true";
    } else {
      animate({ el: button, total, draw });
    }
    return button;
  }

  // ---------------------------------------------------------------------------------- messages
  function showError(text) {
    ui.errorText.textContent = text;
    ui.error.hidden = false;
  }
  const hideError = () => { ui.error.hidden = true; };
  const setStatus = (text) => { ui.status.textContent = text; };

  // ---------------------------------------------------------------------------------- the API
  // request(path, body, signal) -> {ok, status, statusText, data}; models() -> [{name, mode, classes}]
  const server = {
    inPage: false,
    async models() {
      const response = await fetch("/api/models");
      if (!response.ok) throw new Error(`${response.status}`);
      return response.json();
    },
    async request(path, body, signal) {
      const response = await fetch(path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
      });
      let data = null;
      try { data = await response.json(); } catch (_) { data = null; }
      return { ok: response.ok, status: response.status, statusText: response.statusText, data };
    },
  };
  const backend = window.SketchvaeInPage || server;  // inpage.js's adapter has the same two methods

  async function post(channel, path, body) {
    // one request per channel: a newer one cancels the older; answers to stale requests are dropped
    const ch = state.channels[channel] || (state.channels[channel] = { seq: 0, controller: null });
    if (nextSeed !== null) body = { ...body, seed: nextSeed++ };
    if (ch.controller) ch.controller.abort();
    const controller = new AbortController();
    const seq = ++ch.seq;
    ch.controller = controller;
    try {
      const { ok, status, statusText, data } = await backend.request(path, body, controller.signal);
      if (seq !== ch.seq) return null;
      if (!ok) {
        const who = backend.inPage ? "The model" : "The server";
        showError(data && data.error ? `${who} refused: ${data.error}` : `${who} answered ${status} ${statusText}.`);
        return null;
      }
      hideError();
      return data;
    } catch (err) {
      if (err.name === "AbortError" || seq !== ch.seq) return null;
      showError("Cannot reach the server. Is `sketchvae serve` still running?");
      return null;
    } finally {
      if (seq === ch.seq) ch.controller = null;
    }
  }

  function cancel(channel) {
    const ch = state.channels[channel];
    if (ch) { ch.seq++; if (ch.controller) ch.controller.abort(); ch.controller = null; }
  }

  const currentModel = () => state.models.find((m) => m.name === ui.model.value);

  function common() {
    const model = currentModel();
    const body = { model: model.name, temperature: Number(ui.temperature.value) };
    if (model.classes.length) body.class = ui.cls.value;
    return body;
  }

  // ---------------------------------------------------------------------------------- suggestions
  function placeholder(text) {
    stopAnimations(ui.suggestions);
    ui.suggestions.classList.remove("busy");
    ui.suggestions.replaceChildren();
    const p = document.createElement("p");
    p.className = "placeholder";
    p.textContent = text;
    ui.suggestions.append(p);
  }

  function showSuggestions(items, under, onPick) {
    stopAnimations(ui.suggestions);
    ui.suggestions.classList.remove("busy");
    ui.suggestions.replaceChildren();
    items.forEach((polys, i) => tile(ui.suggestions, {
      polys, under, label: String(i + 1), onPick: () => onPick(polys),
    }));
  }

  async function requestEndings() {
    if (!state.strokes.length || !currentModel()) return;
    const n = Number(ui.count.value);
    const strokes = toStroke3(drawingPolys());
    const origin = lastPoint();
    const under = drawingPolys();
    ui.suggestions.classList.add("busy");
    ui.suggestionsTitle.textContent = "Endings";
    ui.suggestionsHelp.textContent = "Click one to keep it, or draw on.";
    setStatus("Thinking...");
    const t0 = performance.now();
    const data = await post("suggest", "/api/complete", { ...common(), strokes, n });
    if (!data) {
      ui.suggestions.classList.remove("busy");
      setStatus("");
      if (!ui.error.hidden) placeholder("No endings for this drawing: see the message above.");
      return;
    }
    const seconds = ((performance.now() - t0) / 1000).toFixed(2);
    setStatus(`${n} ending${n > 1 ? "s" : ""} in ${seconds} s from ${ui.model.value}.`);
    showSuggestions(data.sketches.map((s) => toPolylines(s, origin)), under, (polys) => {
      pushHistory();
      for (const p of polys) state.strokes.push({ points: p, by: "model" });
      redraw();
      placeholder("Kept. Draw on for new endings, or undo.");
      setStatus("");
    });
  }

  async function drawSomething() {
    if (!currentModel()) return;
    const n = Number(ui.count.value);
    ui.suggestions.classList.add("busy");
    ui.suggestionsTitle.textContent = "Drawings";
    ui.suggestionsHelp.textContent = "From nothing: click one to start from it.";
    setStatus("Thinking...");
    const t0 = performance.now();
    const data = await post("suggest", "/api/sample", { ...common(), n });
    if (!data) { ui.suggestions.classList.remove("busy"); setStatus(""); return; }
    setStatus(`${n} drawing${n > 1 ? "s" : ""} in ${((performance.now() - t0) / 1000).toFixed(2)} s.`);
    showSuggestions(data.sketches.map((s) => toPolylines(s, [0, 0])), [], (polys) => {
      pushHistory();
      state.strokes = polys.map((p) => ({ points: p, by: "model" }));
      redraw();
      placeholder("Kept. Draw on for new endings, or undo.");
      setStatus("");
    });
  }

  // ---------------------------------------------------------------------------------- editing
  function pushHistory() {
    state.history.push(state.strokes.slice());
    if (state.history.length > 200) state.history.shift();
  }

  function undo() {
    if (!state.history.length) return;
    cancel("suggest");
    state.strokes = state.history.pop();
    redraw();
    if (state.strokes.length) requestEndings();
    else placeholder("Draw a stroke to get endings.");
  }

  function clearDrawing() {
    if (!state.strokes.length) return;
    cancel("suggest");
    pushHistory();
    state.strokes = [];
    redraw();
    placeholder("Draw a stroke to get endings.");
    setStatus("");
  }

  function downloadSvg() {
    if (!state.strokes.length) { showError("Nothing to download yet: draw something first."); return; }
    const box = viewBox([drawingPolys()], { withCanvas: true });
    const f = (v) => round2(v).toString();
    const parts = state.strokes.map((s) => {
      const color = s.by === "model" ? MODEL_INK : INK;
      if (s.points.length === 1) {
        const [x, y] = s.points[0];
        return `<circle cx="${f(x)}" cy="${f(y)}" r="${LINE * 0.7}" fill="${color}"/>`;
      }
      return `<polyline points="${s.points.map(([x, y]) => `${f(x)},${f(y)}`).join(" ")}" stroke="${color}"/>`;
    });
    const svg = `<?xml version="1.0" encoding="UTF-8"?>\n` +
      `<svg xmlns="http://www.w3.org/2000/svg" viewBox="${f(box.x)} ${f(box.y)} ${f(box.size)} ${f(box.size)}" ` +
      `width="${Math.round(box.size)}" height="${Math.round(box.size)}">\n` +
      `<rect x="${f(box.x)}" y="${f(box.y)}" width="${f(box.size)}" height="${f(box.size)}" fill="white"/>\n` +
      `<g fill="none" stroke-width="${LINE}" stroke-linecap="round" stroke-linejoin="round">\n` +
      parts.join("\n") + "\n</g>\n</svg>\n";
    const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "sketch.svg";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 2000);
  }

  // ---------------------------------------------------------------------------------- pointer input
  function pagePoint(event) {
    const rect = ui.canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * CANVAS) / rect.width;
    const y = ((event.clientY - rect.top) * CANVAS) / rect.height;
    return [round2(Math.min(CANVAS, Math.max(0, x))), round2(Math.min(CANVAS, Math.max(0, y)))];
  }

  function onDown(event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    ui.canvas.setPointerCapture(event.pointerId);
    cancel("suggest");
    state.current = { points: [pagePoint(event)], by: "you", pointer: event.pointerId };
    redraw();
  }

  function onMove(event) {
    const cur = state.current;
    if (!cur || event.pointerId !== cur.pointer) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const p = pagePoint(e);
      const q = cur.points[cur.points.length - 1];
      if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= MIN_STEP) cur.points.push(p);
    }
    redraw();
  }

  function onUp(event) {
    const cur = state.current;
    if (!cur || event.pointerId !== cur.pointer) return;
    state.current = null;
    pushHistory();
    state.strokes = [...state.strokes, { points: cur.points, by: "you" }];
    redraw();
    requestEndings();
  }

  // ---------------------------------------------------------------------------------- interpolation
  function paintSlot(name) {
    const canvas = name === "a" ? ui.slotA : ui.slotB;
    const polys = state.slots[name] || [];
    paint(canvas, [{ polys, color: INK }], viewBox([polys]), 2);
    canvas.dataset.points = String(countPoints(polys));
  }

  async function fillSlot(name, from) {
    if (from === "canvas") {
      if (!state.strokes.length) { showError("Draw something on the canvas first, then use it as " + name.toUpperCase() + "."); return; }
      state.slots[name] = drawingPolys().map((p) => p.slice());
      hideError();
    } else {
      const data = await post("slot-" + name, "/api/sample", { ...common(), n: 1 });
      if (!data) return;
      state.slots[name] = toPolylines(data.sketches[0], [0, 0]);
    }
    paintSlot(name);
  }

  async function interpolate() {
    const { a, b } = state.slots;
    if (!a || !b || !countPoints(a) || !countPoints(b)) {
      showError("Choose both ends first: A and B (your drawing or a random one).");
      return;
    }
    const steps = Number(ui.steps.value);
    stopAnimations(ui.strip);
    ui.strip.replaceChildren();
    setStatus("Interpolating...");
    const data = await post("interp", "/api/interpolate", {
      model: ui.model.value, a: toStroke3(a), b: toStroke3(b), steps, temperature: Number(ui.temperature.value),
    });
    if (!data) { setStatus(""); return; }
    setStatus(`${steps} steps from A to B.`);
    data.sketches.forEach((s, i) => {
      const polys = toPolylines(s, [0, 0]);
      tile(ui.strip, {
        polys, label: (i / (steps - 1)).toFixed(2), onPick: () => {
          pushHistory();
          state.strokes = polys.map((p) => ({ points: p, by: "model" }));
          redraw();
          placeholder("Kept. Draw on for new endings, or undo.");
        },
      });
    });
  }

  // ---------------------------------------------------------------------------------- models
  function onModelChange() {
    const model = currentModel();
    if (!model) return;
    cancel("suggest");
    ui.cls.replaceChildren(...model.classes.map((c) => new Option(c, c)));
    ui.clsLabel.hidden = model.classes.length === 0;
    const vae = model.mode === "vae";
    ui.interpBody.hidden = !vae;
    ui.interpHelp.textContent = vae
      ? "Two drawings, A and B, and what the model draws between them in its latent space."
      : `Interpolation needs a model of mode "vae"; ${model.name} is a "${model.mode}" model.`;
    state.slots = { a: null, b: null };
    paintSlot("a"); paintSlot("b");
    stopAnimations(ui.strip);
    ui.strip.replaceChildren();
    if (state.strokes.length) requestEndings();
    else placeholder("Draw a stroke to get endings, or press Draw something.");
  }

  async function loadModels() {
    try {
      state.models = await backend.models();
    } catch (err) {
      showError("Cannot load the list of models from the server. Is `sketchvae serve` still running?");
      return;
    }
    if (!state.models.length) { showError(backend.inPage ? "This page has no models." : "The server has no models."); return; }
    if (backend.inPage) $("where").textContent = "everything runs in this page, no server";
    ui.model.replaceChildren(...state.models.map((m) => new Option(m.name === m.mode ? m.name : `${m.name} (${m.mode})`, m.name)));
    const preferred = state.models.find((m) => m.name === "sheep") || state.models[0];
    ui.model.value = preferred.name;
    onModelChange();
    document.body.dataset.ready = "true";
  }

  // ---------------------------------------------------------------------------------- wiring
  function init() {
    ui.canvas.addEventListener("pointerdown", onDown);
    ui.canvas.addEventListener("pointermove", onMove);
    ui.canvas.addEventListener("pointerup", onUp);
    ui.canvas.addEventListener("pointercancel", onUp);
    $("draw-something").addEventListener("click", drawSomething);
    $("undo").addEventListener("click", undo);
    $("clear").addEventListener("click", clearDrawing);
    $("download").addEventListener("click", downloadSvg);
    $("interpolate").addEventListener("click", interpolate);
    $("error-close").addEventListener("click", hideError);
    for (const b of document.querySelectorAll("[data-slot]")) {
      b.addEventListener("click", () => fillSlot(b.dataset.slot, b.dataset.from));
    }
    ui.model.addEventListener("change", onModelChange);
    ui.cls.addEventListener("change", requestEndings);
    ui.count.addEventListener("change", requestEndings);
    ui.temperature.addEventListener("input", () => {
      ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
    });
    ui.temperature.addEventListener("change", requestEndings);
    document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
    document.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
    });
    new ResizeObserver(() => { redraw(); paintSlot("a"); paintSlot("b"); }).observe(ui.canvas);
    redraw();
    placeholder("Draw a stroke to get endings, or press Draw something.");
    loadModels();
  }

  init();
})();
