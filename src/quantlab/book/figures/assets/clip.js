/* Script of the figure "Clip it" (quantlab.book.figures.clip).
   The page inlines this file after this comment, after assets/common.js. It picks the
   precomputed errors for the chosen values, bit width and grid point and draws them: it maps
   values to pixels on logarithmic axes and never quantizes anything. */
var ctl = {source: $("select[data-role=source]"), alpha: $("input[data-role=alpha]")};
var st = {source: D.initial.source, bits: D.initial.bits, index: D.initial.index};
var DECADES = 3, MARKERS = [["mse", "MSE-optimal", "circle"], ["p99.9", "99.9th pct", "up"],
                             ["p99.99", "99.99th pct", "down"], ["absmax", "absmax", "square"]];
function src() { return D.sources[st.source]; }
function cur() { return src().bits[String(st.bits)]; }
function pct(share) { return share === 0 ? "0 %" : sig(100 * share, 3) + " %"; }
function width(svg) { return Math.max(300, Math.min(760, svg.getBoundingClientRect().width || 760)); }
var L = 54, R = 14;
function xOf(W, ratio) { return L + (Math.log10(ratio) + DECADES) / DECADES * (W - L - R); }
function xAxis(svg, W, y) {
  svgEl(svg, "line", {x1: L, x2: W - R, y1: y, y2: y, "class": "qlf-axis"});
  for (var k = -DECADES; k <= 0; k++) {
    var x = xOf(W, Math.pow(10, k));
    svgEl(svg, "line", {x1: x, x2: x, y1: y, y2: y + 5, "class": "qlf-axis"});
    svgEl(svg, "text", {x: x, y: y + 19, "text-anchor": k === 0 ? "end" : "middle"}, String(Math.pow(10, k)));
  }
}
function powerLabel(svg, x, y, k) {
  var t = svgEl(svg, "text", {x: x, y: y, "text-anchor": "end", "class": "qlf-sub"}, "10");
  svgEl(t, "tspan", {dy: -6, "font-size": "10px"}, String(k).replace("-", "−"));
  return t;
}
function yLog(svg, top, bottom, lo, hi, W) {
  var y = function (v) { return bottom - (Math.log10(v) - lo) / (hi - lo) * (bottom - top); };
  svgEl(svg, "line", {x1: L, x2: L, y1: top, y2: bottom, "class": "qlf-axis"});
  var step = Math.max(1, Math.ceil((hi - lo) / 4));
  for (var k = Math.ceil(lo); k <= Math.floor(hi); k += step) {
    svgEl(svg, "line", {x1: L - 4, x2: L, y1: y(Math.pow(10, k)), y2: y(Math.pow(10, k)), "class": "qlf-axis"});
    powerLabel(svg, L - 6, y(Math.pow(10, k)) + 4, k);
    svgEl(svg, "line", {x1: L, x2: W - R, y1: y(Math.pow(10, k)), y2: y(Math.pow(10, k)),
                        stroke: "var(--qlf-border)", "stroke-width": 0.8});
  }
  return y;
}
function alphaLine(svg, x, y1, y2) {
  svgEl(svg, "line", {x1: x, x2: x, y1: y1, y2: y2, stroke: "var(--qlf-c)", "stroke-width": 2,
                      "stroke-dasharray": "6 3", "data-role": "alpha-line"});
}
function drawHist(W) {
  var svg = $("svg[data-role=hist]"), desc = svg.querySelector("desc"), h = src().hist, c = cur();
  while (svg.lastChild !== desc) svg.removeChild(svg.lastChild);
  var lines = svgWrapped(svg, 4, 16, "How the " + thousands(h.n) + " values |x| are spread (share per bin)",
                         {"font-weight": 600}, W - 8, 17);
  var top = 30 + 17 * (lines - 1), bottom = top + 130;
  var lo = Math.floor(Math.log10(1 / h.n)), y = yLog(svg, top, bottom, lo, 0, W);
  var ratio = c.threshold[st.index] / h.absmax, half = c.threshold[st.index] / c.qmax / 2 / h.absmax;
  var inside = "", outside = "";
  h.counts.forEach(function (n, i) {
    if (!n) return;
    var x0 = xOf(W, h.ratios[i]), x1 = xOf(W, h.ratios[i + 1]), yy = y(n / h.n);
    var d = "M" + x0.toFixed(1) + "," + bottom + "V" + yy.toFixed(1) + "H" + x1.toFixed(1) + "V" + bottom + "Z";
    if (Math.sqrt(h.ratios[i] * h.ratios[i + 1]) > ratio) outside += d; else inside += d;
  });
  svgEl(svg, "path", {d: inside, fill: "var(--qlf-a)", "data-role": "hist-inside"});
  svgEl(svg, "path", {d: outside, fill: "var(--qlf-b)", "data-role": "hist-clipped"});
  xAxis(svg, W, bottom);
  var xa = xOf(W, ratio);
  alphaLine(svg, xa, top - 8, bottom);
  svgEl(svg, "text", {x: xa > W / 2 ? xa - 4 : xa + 4, y: top + 4, "text-anchor": xa > W / 2 ? "end" : "start"},
        "α: clipped beyond");
  if (half >= Math.pow(10, -DECADES)) {
    var xh = xOf(W, half);
    svgEl(svg, "line", {x1: xh, x2: xh, y1: top + 14, y2: bottom, stroke: "var(--qlf-fg)", "stroke-width": 1.2,
                        "stroke-dasharray": "2 3", "data-role": "half-step"});
    var left = xh - L > 100;
    svgEl(svg, "text", {x: left ? xh - 4 : xh + 4, y: top + 24, "text-anchor": left ? "end" : "start",
                        "class": "qlf-sub"}, left ? "s/2: 0 below" : "← 0 below s/2");
  }
  var cap = svgWrapped(svg, L, bottom + 36, "|x| / max|x| (max|x| = " + sig(h.absmax, 3) + ")" +
                       (h.below ? "; " + thousands(h.below) + " values below 0.001" : ""), {"class": "qlf-sub"}, W - L - R, 16);
  svg.setAttribute("viewBox", "0 0 " + W + " " + (bottom + 44 + 16 * (cap - 1)));
}
function marker(svg, shape, x, y) {
  var a = {"data-role": "marker", fill: "var(--qlf-panel)", stroke: "var(--qlf-fg)", "stroke-width": 2};
  if (shape === "circle") { a.cx = x; a.cy = y; a.r = 5.5; return svgEl(svg, "circle", a); }
  if (shape === "square") { a.x = x - 5; a.y = y - 5; a.width = 10; a.height = 10; return svgEl(svg, "rect", a); }
  var s = shape === "up" ? -1 : 1;
  a.d = "M" + (x - 6) + "," + (y - 5 * s) + "L" + (x + 6) + "," + (y - 5 * s) + "L" + x + "," + (y + 6 * s) + "Z";
  return svgEl(svg, "path", a);
}
function drawCurves(W) {
  var svg = $("svg[data-role=curves]"), desc = svg.querySelector("desc"), c = cur(), s = src();
  while (svg.lastChild !== desc) svg.removeChild(svg.lastChild);
  var lines = svgWrapped(svg, 4, 16, "Mean squared error against the clip threshold, int" + st.bits,
                         {"font-weight": 600}, W - 8, 17);
  var top = 30 + 17 * (lines - 1), bottom = top + 180, absmax = s.hist.absmax;
  svg.setAttribute("viewBox", "0 0 " + W + " " + (bottom + 44));
  var all = c.rounding.concat(c.clipping, c.total).filter(function (v) { return v > 0; });
  var lo = Math.floor(Math.log10(Math.min.apply(null, all))), hi = Math.ceil(Math.log10(Math.max.apply(null, all)));
  lo = Math.max(lo, hi - 8);
  var y = yLog(svg, top, bottom, lo, hi, W);
  [["rounding", "var(--qlf-a)", 2], ["clipping", "var(--qlf-b)", 2], ["total", "var(--qlf-fg)", 3]].forEach(function (k) {
    var d = "", pen = "M";
    c[k[0]].forEach(function (v, i) {
      if (!(v > 0) || Math.log10(v) < lo) { pen = "M"; return; }
      d += pen + xOf(W, c.threshold[i] / absmax).toFixed(1) + "," + y(v).toFixed(1);
      pen = "L";
    });
    svgEl(svg, "path", {d: d, fill: "none", stroke: k[1], "stroke-width": k[2], "data-role": "curve-" + k[0]});
  });
  xAxis(svg, W, bottom);
  svgEl(svg, "text", {x: W - R, y: bottom + 36, "text-anchor": "end", "class": "qlf-sub"}, "α / max|x|");
  MARKERS.forEach(function (m) {
    var p = c.markers[m[0]], mx = xOf(W, p.ratio), my = y(p.total);
    var g = marker(svg, m[2], mx, my);
    g.setAttribute("data-marker", m[0]);
    svgEl(g, "title", {}, m[1] + ": α = " + sig(p.threshold, 3) + ", MSE " + sig(p.total, 3));
  });
  var xa = xOf(W, c.threshold[st.index] / absmax);
  alphaLine(svg, xa, top - 8, bottom);
  [["rounding", "var(--qlf-a)"], ["clipping", "var(--qlf-b)"], ["total", "var(--qlf-fg)"]].forEach(function (k) {
    var v = c[k[0]][st.index];
    if (v > 0 && Math.log10(v) >= lo) svgEl(svg, "circle", {cx: xa, cy: y(v), r: 4, fill: k[1], "data-role": "now-" + k[0]});
  });
}
function setOut(name, text, value) {
  var n = putText($("[data-out=" + name + "]"), text);
  if (value !== undefined) n.setAttribute("data-value", raw(value));
}
function choices() {
  var c = cur(), body = $("table[data-role=choices] tbody"), ref = c.markers.absmax.total;
  clear(body);
  MARKERS.forEach(function (m) {
    var p = c.markers[m[0]], tr = htmlEl(body, "tr", {"data-marker": m[0]});
    htmlEl(tr, "th", {scope: "row"}, m[0] === "mse" ? "MSE-optimal (grid search)" : m[0] === "absmax" ? "absmax"
      : m[1].replace("pct", "percentile"));
    var a = htmlEl(tr, "td", {"data-value": raw(p.threshold)}, sig(p.threshold, 3));
    htmlEl(a, "small", {}, sig(p.ratio, 3) + " × max");
    htmlEl(tr, "td", {"data-value": raw(p.clipped)}, pct(p.clipped));
    var t = putText(htmlEl(tr, "td", {"data-value": raw(p.total)}), sig(p.total, 3));
    htmlEl(t, "small", {}, sig(p.total / ref, 3) + "× absmax");
  });
}
function render() {
  var c = cur(), s = src(), i = st.index, absmax = s.hist.absmax, ratio = c.threshold[i] / absmax;
  ctl.alpha.max = String(s.ratios.length - 1);
  ctl.alpha.value = String(i);
  ctl.alpha.setAttribute("aria-valuetext", "α = " + sig(c.threshold[i], 3) + ", " + sig(ratio, 3) + " of max|x|");
  $("[data-out=ratio-text]").textContent = sig(ratio, 3);
  setOut("threshold", sig(c.threshold[i], 3), c.threshold[i]);
  setOut("scale", sig(c.threshold[i] / c.qmax, 3), c.threshold[i] / c.qmax);
  setOut("clipped", pct(c.clipped[i]), c.clipped[i]);
  setOut("zeroed", pct(c.zeroed[i]), c.zeroed[i]);
  setOut("rounding", sig(c.rounding[i], 3), c.rounding[i]);
  setOut("clipping", sig(c.clipping[i], 3), c.clipping[i]);
  setOut("total", sig(c.total[i], 3) + (i === c.best ? " (lowest)" : ""), c.total[i]);
  var W = width($("svg[data-role=curves]"));
  drawHist(W);
  drawCurves(W);
  choices();
  root.dataset.source = st.source;
  root.dataset.bits = String(st.bits);
  root.dataset.index = String(i);
}
function nearest(ratio) {
  var r = src().ratios, best = 0;
  for (var i = 1; i < r.length; i++) {
    if (Math.abs(Math.log(r[i] / ratio)) < Math.abs(Math.log(r[best] / ratio))) best = i;
  }
  return best;
}
ctl.alpha.addEventListener("input", function () { st.index = Number(ctl.alpha.value); render(); });
ctl.source.addEventListener("change", function () {
  var ratio = src().ratios[st.index];
  st.source = ctl.source.value;
  st.index = nearest(ratio);
  render();
});
$$("input[data-role=bits]").forEach(function (r) {
  r.addEventListener("change", function () { if (r.checked) { st.bits = Number(r.value); render(); } });
});
$$("button[data-role=jump]").forEach(function (b) {
  b.addEventListener("click", function () {
    var m = cur().markers[b.dataset.marker];
    st.index = b.dataset.marker === "mse" ? cur().best : nearest(m.ratio);
    render();
  });
});
window.addEventListener("resize", render);
render();
