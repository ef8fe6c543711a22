/* Helpers every kernel-free figure's script shares (quantlab.book.figures._page).
   The page inlines this file after this comment, inside the figure's own function, where
   `root` (the figure's outer element) and `D` (its precomputed data) are already defined;
   the figure's own script follows. Number formatting here reproduces Python's, so that a
   number the page shows is the string quantlab prints. */
var NS = "http://www.w3.org/2000/svg";
function $(sel) { return root.querySelector(sel); }
function $$(sel) { return Array.prototype.slice.call(root.querySelectorAll(sel)); }
// An SVG element (attributes, optional text) appended to parent.
function svgEl(parent, tag, attrs, text) {
  var e = document.createElementNS(NS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}
// An HTML element (attributes, optional text) appended to parent.
function htmlEl(parent, tag, attrs, text) {
  var e = document.createElement(tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
// SVG text that wraps at maxW (measured by the browser); returns the number of lines.
function svgWrapped(svg, x, y, text, attrs, maxW, lineH) {
  var a = {x: x, y: y};
  for (var k in attrs) a[k] = attrs[k];
  var t = svgEl(svg, "text", a), line = svgEl(t, "tspan", {x: x}), n = 1;
  text.split(" ").forEach(function (word) {
    var before = line.textContent;
    line.textContent = before ? before + " " + word : word;
    if (before && line.getComputedTextLength() > maxW) {
      line.textContent = before;
      line = svgEl(t, "tspan", {x: x, dy: lineH}, word);
      n++;
    }
  });
  return n;
}
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
// Python's f"{x:.{d}f}": JavaScript's toFixed rounds an exact tie (x * 10^d ending in .5)
// up, Python to the even neighbour. A tie needs x * 2^(d+1) to be an integer, and then
// toFixed(d + 1) is x's exact decimal expansion.
function fixed(x, d) {
  if (isNaN(x)) return "nan";
  if (!isFinite(x)) return x > 0 ? "inf" : "-inf";
  var neg = x < 0 || Object.is(x, -0), a = Math.abs(x), s = a.toFixed(d);
  if (Number.isInteger(a * Math.pow(2, d + 1))) {
    var t = a.toFixed(d + 1);
    if (t.charAt(t.length - 1) === "5") {
      var lower = t.slice(0, -1).replace(/\.$/, "");
      if (Number(s.charAt(s.length - 1)) % 2 === 1) s = lower;
    }
  }
  return (neg ? "-" : "") + s;
}
// Python's f"{n:,}" for an integer.
function thousands(n) {
  var s = String(Math.abs(n)), out = "";
  while (s.length > 3) { out = "," + s.slice(-3) + out; s = s.slice(0, -3); }
  return (n < 0 ? "-" : "") + s + out;
}
// A number for reading, with `digits` significant digits, positional between 1e-4 and 1e6
// and as mantissa × 10^exponent outside (no float noise such as 0.30000000000000004).
function sig(x, digits) {
  if (isNaN(x)) return "NaN";
  if (!isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (x === 0) return Object.is(x, -0) ? "−0" : "0";
  var a = Math.abs(x), s;
  if (a >= 1e-4 && a < 1e6) {
    s = String(Number(a.toPrecision(digits)));
  } else {
    var p = a.toExponential(digits - 1).split("e");
    s = String(Number(p[0])) + " × 10^" + String(Number(p[1])).replace("-", "−");
  }
  return (x < 0 ? "−" : "") + s;
}
// A number exactly as JavaScript (and Python's repr, up to notation) round-trips it.
function exact(x) {
  if (isNaN(x)) return "NaN";
  if (!isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (Object.is(x, -0)) return "−0";
  return String(x).replace("-", "−").replace(/e\+?/, " × 10^");
}
// Set node's text, writing each "^exponent" (an integer) as a superscript.
function putText(node, text) {
  clear(node);
  String(text).split(/\^([−-]?\d+)/).forEach(function (part, i) {
    if (i % 2) htmlEl(node, "sup", {}, part);
    else if (part) node.appendChild(document.createTextNode(part));
  });
  return node;
}
// For the tests and the `data-value` attributes: a number as text that parses back exactly.
function raw(x) { return Object.is(x, -0) ? "-0" : String(x); }
// A keyboard shortcut on a figure: only when focus is inside the figure and not in a text box.
function onKeys(handler) {
  root.addEventListener("keydown", function (ev) {
    var t = ev.target.tagName;
    if (t === "INPUT" && ev.target.type !== "range" && ev.target.type !== "button") return;
    if (t === "SELECT" || t === "TEXTAREA" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (handler(ev)) ev.preventDefault();
  });
}
// The formatting helpers, for the book's tests (they compare them with Python's formatting).
root.qlfFormat = {fixed: fixed, thousands: thousands, sig: sig};
