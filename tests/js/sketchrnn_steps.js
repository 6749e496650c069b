// Per-step output of sketchvae's own page decoder (sketchvae/serve/static/sketchrnn.js) for a fixed
// stroke sequence, as magenta_steps.js does for @magenta/sketch (used by tests/test_export_web.py).
//
//   node sketchrnn_steps.js MODEL.gen.json INPUT.json OUT.json
//
// INPUT.json: {"strokes": [[dx, dy, p_down, p_up, p_end], ...] (data units), "temperatures": [tau, ...],
// "convention": "paper" | "magenta" | "magenta-js" | null (the model's), "z": [...] | null, "class": name | null,
// "encode": stroke-3 sketch | null, "sample": {"n", "temperature", "seed", "maxLen"} | null,
// "complete": {"sketch", "n", "temperature", "seed"} | null, "noise": [[u, u, e1, e2] per step] | null}.
// The decoder starts from its initial state for z (and class), reads the start token, then the strokes;
// after every input it writes the pdf for each tau: {"pi", "muX", "muY", "sigmaX", "sigmaY", "corr",
// "pen", "row" (with "noise": the stroke-5 row `draw` makes of it)}.  OUT.json: {"steps": [[pdf per tau], ...], "encoded": {"mu", "presig"} | null,
// "sampled": [[stroke-3], ...] twice (same seed) | null, "completed": [...] | null}.
'use strict';
const fs = require('fs');
const path = require('path');
const D = require(path.join(__dirname, '..', '..', 'sketchvae', 'serve', 'static', 'sketchrnn.js'));

async function main() {
  const [modelPath, inputPath, outPath] = process.argv.slice(2);
  const model = D.parseModel(JSON.parse(fs.readFileSync(modelPath, 'utf8')), modelPath);
  const input = JSON.parse(fs.readFileSync(inputPath, 'utf8'));
  const z = input.z || (model.mode === 'decoder' ? null : new Array(model.Z).fill(0));  // default: z = 0
  let state = D.decoderFor(model, z, input.class ?? null);
  const rows = [D.START].concat(input.strokes.map((s) => [s[0] / model.scale, s[1] / model.scale, s[2], s[3], s[4]]));
  const steps = [];
  for (const row of rows) {
    state = D.feed(model, state, [row]);
    const pdfs = input.temperatures.map((tau) => D.pdf(model, state.h, tau, input.convention || model.convention));
    // "noise": [[u, u, e, e] per step]: the row `draw` makes of each pdf with that step's noise
    if (input.noise) pdfs.forEach((p) => { p.row = D.draw(p, input.noise[steps.length]); });
    steps.push(pdfs);
  }
  const result = {steps, encoded: null, sampled: null, completed: null};
  if (input.encode) result.encoded = D.encode(model, input.encode, input.class ?? null);
  if (input.sample) {
    const s = input.sample;
    const opts = {temperature: s.temperature, seed: s.seed, maxLen: s.maxLen,
                  classes: input.class ? Array(s.n).fill(input.class) : null};
    result.sampled = [await D.sample(model, s.n, opts), await D.sample(model, s.n, opts)];
  }
  if (input.complete) {
    const c = input.complete;
    result.completed = await D.complete(model, c.sketch, c.n, {temperature: c.temperature, seed: c.seed, cls: input.class ?? null});
  }
  fs.writeFileSync(outPath, JSON.stringify(result));
}

main().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
