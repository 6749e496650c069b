// Per-step output of @magenta/sketch 0.2.0 for a fixed stroke sequence (used by tests/test_magenta_js.py).
//
//   node magenta_steps.js MODEL.gen.json INPUT.json OUT.json
//
// INPUT.json: {"strokes": [[dx, dy, p_down, p_up, p_end], ...], "temperatures": [tau, ...]}, offsets in
// the model's units (the pixel factor is set to 1, so magenta-js divides them by info.scale_factor).
// The model starts from zeroState() and reads zeroInput() (the start token), then the strokes; after
// every input it writes getPDF(state, tau) for each tau: {"pi", "muX", "muY", "sigmaX", "sigmaY",
// "corr", "pen"} (20 + 20 + 20 + 20 + 20 + 20 + 3 numbers).  OUT.json: {"steps": [[pdf per tau, in the
// order given], ...]}.
'use strict';
const fs = require('fs');
const {SketchRNN} = require('@magenta/sketch/es5/sketch_rnn/model');

const [modelPath, inputPath, outPath] = process.argv.slice(2);
const [info, dims, strings] = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
const input = JSON.parse(fs.readFileSync(inputPath, 'utf8'));
const model = new SketchRNN(modelPath);
model.instantiateFromJSON(info, dims, strings);
model.setPixelFactor(1.0);
const M = model.NMIXTURE;
const arr = (a, n) => Array.from(a.slice(0, n));
// "state": {"c": [...], "h": [...]} in INPUT.json starts from that state instead (an exported vae's gen initial state)
let state = input.state ? {c: new Float32Array(input.state.c), h: new Float32Array(input.state.h)} : model.zeroState();
const steps = [];
for (const stroke of [model.zeroInput()].concat(input.strokes)) {
  state = model.update(stroke, state);
  const out = [];
  for (const tau of input.temperatures) {
    const pdf = model.getPDF(state, tau);
    out.push({
      pi: arr(pdf.pi, M), muX: arr(pdf.muX, M), muY: arr(pdf.muY, M), sigmaX: arr(pdf.sigmaX, M),
      sigmaY: arr(pdf.sigmaY, M), corr: arr(pdf.corr, M), pen: arr(pdf.pen, 3),
    });
  }
  steps.push(out);
}
fs.writeFileSync(outPath, JSON.stringify({steps: steps, scaleFactor: model.scaleFactor}));
