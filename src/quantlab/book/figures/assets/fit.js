/* Script of the figure "Does it fit?" (quantlab.book.figures.fit).
   The page inlines this file after this comment, after assets/common.js. It does
   quantlab.memory's arithmetic in the same order of operations (so the same doubles):
     weights = n * bits_per_weight / 8
     kv      = 2 * layers * kv_heads * head_dim * tokens * batch * kv_bits / 8
     needed  = weights * (1 + overhead) + kv,   fits = needed <= GPU memory
   with the bits per weight, the shapes and the GPUs quantlab computed (D). */
var MODELS = {}, WF = {}, KVF = {}, GPU = {};
D.models.forEach(function (m) { MODELS[m.name] = m; });
D.weights.forEach(function (w) { WF[w.key] = w; });
D.kv.forEach(function (k) { KVF[k.key] = k; });
D.gpus.forEach(function (g) { GPU[g.name] = g; });
var ctl = {model: $("select[data-role=model]"), params: $("input[data-role=params]"),
           weights: $("select[data-role=weights]"), context: $("input[data-role=context]"),
           batch: $("input[data-role=batch]"), kv: $("select[data-role=kv]"), gpu: $("select[data-role=gpu]")};
var PARTS = [["weights", "var(--qlf-a)"], ["kv_cache", "var(--qlf-b)"], ["overhead", "var(--qlf-c)"]];
var st = {n: D.initial.n_params, custom: false, problem: ""};

function gib(bytes) { return fixed(Math.max(bytes, 0) / D.gib, 1) + " GiB"; }
// The figure's numbers for one setting {model, n, weights, context, batch, kv, gpu}.
function compute(s) {
  var m = MODELS[s.model], w = WF[s.weights];
  var kv = 2 * m.n_layers * m.n_kv_heads * m.head_dim * s.context * s.batch * KVF[s.kv].bits / 8;
  var weights = s.n * w.bpw / 8;
  var needed = weights * (1.0 + D.overhead) + kv;
  var cap = GPU[s.gpu].memory_bytes, smallest = null;
  for (var i = 0; i < D.gpus.length; i++) {
    if (needed <= D.gpus[i].memory_bytes) { smallest = D.gpus[i].name; break; }
  }
  var out = {bits_per_weight: w.bpw, weights: weights, kv_cache: kv, overhead: needed - weights - kv,
             needed: needed, capacity: cap, fits: needed <= cap, smallest_gpu: smallest, gib: {}};
  ["weights", "kv_cache", "overhead", "needed", "capacity"].forEach(function (k) { out.gib[k] = gib(out[k]); });
  return out;
}
root.qlfRoutine = {compute: compute};

function setting() {
  return {model: ctl.model.value, n: st.n, weights: ctl.weights.value,
          context: D.contexts[Number(ctl.context.value)], batch: Number(ctl.batch.value),
          kv: ctl.kv.value, gpu: ctl.gpu.value};
}
function niceStep(max) {
  var raw = max / 5, p = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / p;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
}
function drawBar(s, b) {
  var svg = $("svg[data-role=bar]"), desc = svg.querySelector("desc");
  while (svg.lastChild !== desc) svg.removeChild(svg.lastChild);
  var W = Math.max(300, Math.min(760, svg.getBoundingClientRect().width || 760)), H = 120;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  var L = 8, R = 12, top = 34, h = 30, maxB = Math.max(b.needed, b.capacity) * 1.08;
  var x = function (v) { return L + v / maxB * (W - L - R); };
  var at = 0;
  PARTS.forEach(function (p) {
    var v = Math.max(b[p[0]], 0);
    var r = svgEl(svg, "rect", {x: x(at), y: top, width: Math.max(x(at + v) - x(at), 0), height: h,
                                fill: p[1], "data-part": p[0], "data-bytes": raw(b[p[0]])});
    svgEl(r, "title", {}, p[0].replace("_", " ") + ": " + b.gib[p[0]]);
    at += v;
  });
  var cx = x(b.capacity), far = cx > W / 2;
  svgEl(svg, "line", {x1: cx, x2: cx, y1: top - 14, y2: top + h + 8, stroke: "var(--qlf-fg)",
                      "stroke-width": 2, "stroke-dasharray": "5 3", "data-part": "capacity"});
  svgEl(svg, "text", {x: far ? cx - 5 : cx + 5, y: top - 18, "text-anchor": far ? "end" : "start",
                      "data-part": "capacity-label"}, s.gpu + ": " + b.gib.capacity);
  var stepGiB = niceStep(maxB / D.gib), y = top + h + 14;
  svgEl(svg, "line", {x1: L, x2: W - R, y1: y, y2: y, "class": "qlf-axis"});
  for (var t = 0; t * stepGiB * D.gib <= maxB; t++) {
    var tx = x(t * stepGiB * D.gib);
    svgEl(svg, "line", {x1: tx, x2: tx, y1: y, y2: y + 5, "class": "qlf-axis"});
    svgEl(svg, "text", {x: tx, y: y + 19, "text-anchor": t === 0 ? "start" : "middle", "class": "qlf-sub"},
          String(Number((t * stepGiB).toPrecision(6))));
  }
  svgEl(svg, "text", {x: W - R, y: y + 37, "text-anchor": "end", "class": "qlf-sub"}, "GiB");
}
function render() {
  var s = setting(), verdict = $("[data-out=verdict]");
  ctl.context.setAttribute("aria-valuetext", thousands(s.context) + " tokens");
  $("[data-out=context]").textContent = thousands(s.context);
  if (st.problem) {
    verdict.textContent = st.problem;
    verdict.className = "qlf-verdict qlf-bad";
    root.dataset.state = "invalid";
    return;
  }
  var b = compute(s), m = MODELS[s.model];
  ["weights", "kv_cache", "overhead", "needed", "capacity"].forEach(function (k) {
    var n = $("[data-out=" + k + "]");
    n.textContent = b.gib[k];
    n.setAttribute("data-bytes", raw(b[k]));
  });
  clear(verdict);
  var head = htmlEl(verdict, "strong", {"data-out": "fits"}, b.fits ? "✓ Fits" : "✗ Does not fit");
  if (b.fits) {
    verdict.appendChild(document.createTextNode(" on the " + s.gpu + ": it needs " + b.gib.needed + " of its " +
      b.gib.capacity + " (" + fixed(100 * b.needed / b.capacity, 0) + " %), at " + b.bits_per_weight +
      " bits per weight."));
  } else {
    verdict.appendChild(document.createTextNode(" on the " + s.gpu + ": it needs " + b.gib.needed + ", " +
      fixed(b.needed / b.capacity, 2) + " times its " + b.gib.capacity + ". "));
    verdict.appendChild(document.createTextNode(b.smallest_gpu
      ? "The smallest card in the catalog that holds it: the " + b.smallest_gpu + " (" + GPU[b.smallest_gpu].memory_gib + " GiB)."
      : "No single card in the catalog holds it: it needs several GPUs, or fewer bits."));
  }
  head.setAttribute("data-value", b.fits ? "true" : "false");
  verdict.setAttribute("data-smallest", b.smallest_gpu || "none");
  verdict.className = "qlf-verdict " + (b.fits ? "qlf-good" : "qlf-bad");
  $("[data-out=shape]").textContent = "KV cache: 2 (key and value) × " + m.n_layers + " layers × " +
    m.n_kv_heads + " KV heads × " + m.head_dim + " (head size) × " + thousands(s.context) + " tokens × " +
    s.batch + (s.batch === 1 ? " sequence" : " sequences") + " × " + KVF[s.kv].bits + " bits / 8 = " +
    b.gib.kv_cache + (st.custom ? " (your parameter count, " + s.model + "'s shape)." : ".");
  root.dataset.state = b.fits ? "fits" : "too-big";
  drawBar(s, b);
}
function readParams() {
  var v = Number(ctl.params.value);
  if (ctl.params.value.trim() === "" || !isFinite(v) || v <= 0 || v > 10000) {
    st.problem = "Parameters: type a number of billions between 0.001 and 10000.";
    return;
  }
  st.problem = "";
  st.n = v * 1e9;
  st.custom = true;
}
function readBatch() {
  var v = Number(ctl.batch.value);
  if (!Number.isInteger(v) || v < 1 || v > D.max_batch) {
    st.problem = "Batch: type a whole number of sequences from 1 to " + D.max_batch + ".";
    return false;
  }
  return true;
}
function update() {
  st.problem = "";
  if (st.custom) readParams();
  if (!st.problem) readBatch();
  render();
}
ctl.model.addEventListener("change", function () {
  var m = MODELS[ctl.model.value];
  st.n = m.n_params;
  st.custom = false;
  ctl.params.value = String(Number((m.n_params / 1e9).toPrecision(6)));
  update();
});
ctl.params.addEventListener("input", function () { st.custom = true; update(); });
["weights", "kv", "gpu"].forEach(function (k) { ctl[k].addEventListener("change", update); });
["context", "batch"].forEach(function (k) { ctl[k].addEventListener("input", update); });
window.addEventListener("resize", function () { if (!st.problem) drawBar(setting(), compute(setting())); });
update();
