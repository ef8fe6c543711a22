/* Script of the figure "Watch the policy" (quantlab.book.figures.policy).
   The page inlines this file after this comment, after assets/common.js. D.fp32 is the
   float32 episode, D.rounded[key] each rounded policy's episode from its first different
   action on (before it, it is the float32 episode): cart positions and pole angles as
   step-to-step differences of integers (mm, 0.1 mrad), actions as a string of 0/1. The
   script only rebuilds those arrays and draws them. */
var ctl = {format: $("select[data-role=format]"), granularity: $("select[data-role=granularity]"),
           speed: $("select[data-role=speed]"), play: $("button[data-role=play]"),
           back: $("button[data-role=back]"), forward: $("button[data-role=forward]"),
           toFirst: $("button[data-role=to-first]"), restart: $("button[data-role=restart]"),
           step: $("input[data-role=step]")};
function cumulative(deltas, scale) {
  var out = [], v = 0;
  deltas.forEach(function (d) { v += d; out.push(v / scale); });
  return out;
}
var FP = {key: "fp32", label: "float32", ret: D.fp32.ret, first: null, agreement: 1, end: D.fp32.end,
          x: cumulative(D.fp32.x, D.x_scale), theta: cumulative(D.fp32.theta, D.theta_scale),
          actions: D.fp32.actions};
var cache = {};
// The whole episode of a rounded policy: the float32 episode up to its first difference.
function trajectory(key) {
  if (cache[key]) return cache[key];
  var r = D.rounded[key];
  cache[key] = {key: key, label: r.label, ret: r.ret, first: r.first_difference, agreement: r.agreement, end: r.end,
                x: FP.x.slice(0, r.start).concat(cumulative(r.x, D.x_scale)),
                theta: FP.theta.slice(0, r.start).concat(cumulative(r.theta, D.theta_scale)),
                actions: FP.actions.slice(0, r.start) + r.actions};
  return cache[key];
}
root.qlfRoutine = {trajectory: trajectory, fp32: FP};
var st = {t: 0, playing: false, last: 0, carry: 0};
function q() { return trajectory(ctl.format.value + "-" + ctl.granularity.value); }
function steps() { return Math.max(FP.x.length, q().x.length); }

var TRACK = 2.4, W = 200, PX = (W - 16) / (2 * TRACK), GROUND = 80;
function drawCart(svg, tr, t, differs) {
  clear(svg);
  var n = tr.x.length, i = Math.min(t, n - 1), over = t >= n;
  var x = tr.x[i], th = tr.theta[i];
  if (over && tr.end) { x = tr.end.x; th = tr.end.theta; }
  var cx = 8 + (x + TRACK) * PX;
  svgEl(svg, "line", {x1: 8, x2: W - 8, y1: GROUND, y2: GROUND, "class": "qlf-axis", "stroke-width": 1.5});
  [-TRACK, 0, TRACK].forEach(function (v) {
    var tx = 8 + (v + TRACK) * PX;
    svgEl(svg, "line", {x1: tx, x2: tx, y1: GROUND, y2: GROUND + (v ? 7 : 4), "class": "qlf-axis", "stroke-width": 1.5});
  });
  var g = svgEl(svg, "g", {"data-role": "cart", "data-x": raw(x), "data-theta": raw(th), opacity: over ? 0.6 : 1});
  svgEl(g, "rect", {x: cx - 0.25 * PX, y: GROUND - 13, width: 0.5 * PX, height: 10, rx: 2, fill: "var(--qlf-muted)"});
  svgEl(g, "circle", {cx: cx - 0.15 * PX, cy: GROUND - 2.5, r: 2.5, fill: "var(--qlf-fg)"});
  svgEl(g, "circle", {cx: cx + 0.15 * PX, cy: GROUND - 2.5, r: 2.5, fill: "var(--qlf-fg)"});
  var base = GROUND - 13, len = 1.0 * PX;
  svgEl(g, "line", {x1: cx, y1: base, x2: cx + len * Math.sin(th), y2: base - len * Math.cos(th),
                    stroke: "var(--qlf-b)", "stroke-width": 4.5, "stroke-linecap": "round", "data-role": "pole"});
  svgEl(g, "circle", {cx: cx, cy: base, r: 2, fill: "var(--qlf-fg)"});
  if (!over) {
    var dir = tr.actions.charAt(i) === "1" ? 1 : -1, ax = cx + dir * (0.25 * PX + 2), ay = GROUND - 8;
    svgEl(svg, "path", {d: "M" + ax + "," + (ay - 4.5) + "L" + (ax + dir * 10) + "," + ay + "L" + ax + "," + (ay + 4.5) + "Z",
                        fill: differs ? "var(--qlf-bad)" : "var(--qlf-a)", "data-role": "push",
                        "data-action": tr.actions.charAt(i)});
  }
}
function stateText(tr, t) {
  var n = tr.x.length;
  if (t >= n) {
    if (!tr.end) return "Done: the time limit of " + n + " steps, the full return.";
    return "Episode over after " + n + " steps: " + (tr.end.reason === "cart"
      ? "the cart ran off the track (x = " + fixed(tr.end.x, 2) + " m)."
      : "the pole fell past 12° (" + fixed(Math.abs(tr.end.theta) * 180 / Math.PI, 1) + "°).");
  }
  var deg = tr.theta[t] * 180 / Math.PI;
  return "cart at " + fixed(tr.x[t], 2) + " m, pole " + fixed(Math.abs(deg), 1) + "° " +
    (deg > 0 ? "right" : deg < 0 ? "left" : "") + "; pushes " + (tr.actions.charAt(t) === "1" ? "right" : "left");
}
function timeline(tr) {
  var svg = $("svg[data-role=timeline]");
  clear(svg);
  var Wt = Math.max(300, Math.min(760, svg.getBoundingClientRect().width || 760)), T = steps(), L = 4, R = 4;
  svg.setAttribute("viewBox", "0 0 " + Wt + " 56");
  var x = function (s) { return L + s / Math.max(T - 1, 1) * (Wt - L - R); };
  [[FP, 6], [tr, 22]].forEach(function (row) {
    svgEl(svg, "rect", {x: L, y: row[1], width: x(row[0].x.length - 1) - L, height: 10, rx: 2,
                        fill: row[0] === FP ? "var(--qlf-a)" : "var(--qlf-b)", "data-role": "length-" + (row[0] === FP ? "fp32" : "q")});
  });
  if (tr.first !== null) {
    var fx = x(tr.first);
    svgEl(svg, "line", {x1: fx, x2: fx, y1: 2, y2: 36, stroke: "var(--qlf-bad)", "stroke-width": 2, "data-role": "first"});
    svgEl(svg, "text", {x: fx > Wt / 2 ? fx - 4 : fx + 4, y: 50, "text-anchor": fx > Wt / 2 ? "end" : "start",
                        "font-size": "12px"}, "first difference: step " + tr.first);
  }
  var cx = x(Math.min(st.t, T - 1));
  svgEl(svg, "line", {x1: cx, x2: cx, y1: 0, y2: 36, stroke: "var(--qlf-fg)", "stroke-width": 2, "data-role": "cursor"});
}
function render() {
  var tr = q(), t = st.t, T = steps();
  ctl.step.max = String(T - 1);
  ctl.step.value = String(t);
  ctl.step.setAttribute("aria-valuetext", "step " + t);
  $("[data-out=step]").textContent = String(t);
  var both = t < FP.x.length && t < tr.x.length, differs = both && FP.actions.charAt(t) !== tr.actions.charAt(t);
  [["fp32", FP], ["q", tr]].forEach(function (p) {
    $("[data-out=title-" + p[0] + "]").textContent = p[1].label;
    drawCart($("svg[data-role=cart-" + p[0] + "]"), p[1], t, differs);
    $("[data-out=state-" + p[0] + "]").textContent = stateText(p[1], t);
    $("[data-panel=" + p[0] + "]").classList.toggle("qlf-differs", differs);
  });
  var put = function (name, text, value) {
    var n = $("[data-out=" + name + "]");
    n.textContent = text;
    n.setAttribute("data-value", value);
  };
  put("ret-fp32", String(FP.ret), raw(FP.ret));
  put("ret-q", String(tr.ret), raw(tr.ret));
  put("first", tr.first === null ? "none: all the same" : "step " + tr.first, tr.first === null ? "none" : String(tr.first));
  put("agreement", fixed(100 * tr.agreement, 1) + " %", raw(tr.agreement));
  ctl.toFirst.disabled = tr.first === null;
  timeline(tr);
  root.dataset.step = String(t);
  root.dataset.policy = tr.key;
}
function go(t) { st.t = Math.max(0, Math.min(steps() - 1, t)); render(); }
function frame(now) {
  if (!st.playing) return;
  var rate = 50 * Number(ctl.speed.value);
  st.carry += (now - st.last) / 1000 * rate;
  st.last = now;
  var k = Math.floor(st.carry);
  if (k > 0) {
    st.carry -= k;
    if (st.t + k >= steps() - 1) { go(steps() - 1); setPlaying(false); return; }
    go(st.t + k);
  }
  requestAnimationFrame(frame);
}
function setPlaying(on) {
  if (on && st.t >= steps() - 1) st.t = 0;
  st.playing = on;
  ctl.play.textContent = on ? "⏸ Pause" : "▶ Play";
  ctl.play.setAttribute("aria-pressed", on ? "true" : "false");
  root.dataset.playing = on ? "1" : "0";
  if (on) { st.last = performance.now(); st.carry = 0; requestAnimationFrame(frame); }
}
ctl.play.addEventListener("click", function () { setPlaying(!st.playing); });
ctl.back.addEventListener("click", function () { setPlaying(false); go(st.t - 1); });
ctl.forward.addEventListener("click", function () { setPlaying(false); go(st.t + 1); });
ctl.restart.addEventListener("click", function () { setPlaying(false); go(0); });
ctl.toFirst.addEventListener("click", function () { setPlaying(false); if (q().first !== null) go(q().first); });
ctl.step.addEventListener("input", function () { setPlaying(false); go(Number(ctl.step.value)); });
[ctl.format, ctl.granularity].forEach(function (c) { c.addEventListener("change", function () { go(st.t); }); });
onKeys(function (ev) {
  var tag = ev.target.tagName;
  if (ev.key === " " || ev.key === "k" || ev.key === "K") {
    if (tag === "BUTTON" && ev.key === " ") return false;
    setPlaying(!st.playing);
    return true;
  }
  if (tag === "INPUT") return false;
  if (ev.key === "ArrowRight") { setPlaying(false); go(st.t + 1); return true; }
  if (ev.key === "ArrowLeft") { setPlaying(false); go(st.t - 1); return true; }
  if (ev.key === "Home") { setPlaying(false); go(0); return true; }
  if (ev.key === "End") { setPlaying(false); go(steps() - 1); return true; }
  return false;
});
window.addEventListener("resize", render);
render();
