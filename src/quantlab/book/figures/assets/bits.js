/* Script of the figure "Bits of a number" (quantlab.book.figures.bits).
   The page inlines this file after this comment, after assets/common.js. D.formats holds
   each format's parameters as quantlab reads them (bits, ebits, mbits, bias, emin, emax,
   has_inf, nan, nan_code, overflow, max, ...). Decoding and rounding here follow
   quantlab.formats.FloatFormat: decode = (-1)^s 2^(E-bias) (1 + M/2^m), or 2^(1-bias) M/2^m
   for E = 0; rounding from a float64 is round(x / q) * q with q = 2^(max(e, emin) - m), ties
   to even, after clamping (saturating formats); results at or beyond 2^(emax+1) become
   infinite (IEEE-like formats). Every power of two is built from its bits, so each result is
   exact; the browser test compares them with quantlab code by code. */
var FMT = {};
D.formats.forEach(function (f) { FMT[f.name] = f; });
var buf = new DataView(new ArrayBuffer(8));
// 2^k, exactly (k >= -1122: every power of two the formats need).
function pow2(k) {
  if (k < -1022) return pow2(k + 100) * pow2(-100);
  buf.setUint32(0, (k + 1023) * 1048576);
  buf.setUint32(4, 0);
  return buf.getFloat64(0);
}
// The exponent field (0..2047) of a float64.
function expField(x) { buf.setFloat64(0, x); return (buf.getUint32(0) >>> 20) & 0x7ff; }
function isNeg(x) { return x < 0 || Object.is(x, -0); }
// Round y >= 0 to an integer, ties to even (torch.round).
function rint(y) {
  var f = Math.floor(y), r = y - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
// The fields and value of a code.
function decode(f, code) {
  var half = pow2(f.bits - 1), s = code >= half ? 1 : 0, mag = code - s * half;
  var scale = pow2(f.mbits), e = Math.floor(mag / scale), m = mag - e * scale;
  var top = pow2(f.ebits) - 1, v;
  if (e === top && f.has_inf) v = m === 0 ? Infinity : NaN;
  else if (e === top && f.nan === "all_ones" && m === scale - 1) v = NaN;
  else if (e === 0) v = m * pow2(f.emin - f.mbits);
  else v = (scale + m) * pow2(e - f.bias - f.mbits);
  if (s) v = -v;
  var kind = isNaN(v) ? "nan" : !isFinite(v) ? "inf" : v === 0 ? "zero" : e === 0 ? "subnormal" : "normal";
  return {code: code, sign: s, exponent: e, mantissa: m, value: v, kind: kind};
}
// x (a float64) rounded to the nearest value of f, as quantlab's FloatFormat.round.
function roundTo(f, x) {
  if (isNaN(x)) return NaN;
  var neg = isNeg(x), a = Math.abs(x);
  if (f.overflow === "saturate") a = Math.min(a, f.max);
  if (a === Infinity) return neg ? -Infinity : Infinity;
  var q = pow2(Math.max(expField(a), f.emin + 1023) - 1023 - f.mbits);
  var r = rint(a / q) * q;
  if (f.overflow === "inf" && r >= pow2(f.emax + 1)) r = Infinity;
  return neg ? -r : r;
}
// The code x is stored as (FloatFormat.encode), or null for NaN in a format without NaN.
function encode(f, x) {
  var r = roundTo(f, x);
  if (isNaN(r)) return f.nan_code;
  var s = isNeg(r) ? 1 : 0, a = Math.abs(r), e, m;
  if (a === Infinity) { e = pow2(f.ebits) - 1; m = 0; }
  else if (a < f.min_normal) { e = 0; m = a / f.min_subnormal; }
  else {
    var ex = expField(a) - 1023;
    e = ex + f.bias;
    m = a / pow2(ex - f.mbits) - pow2(f.mbits);
  }
  return s * pow2(f.bits - 1) + e * pow2(f.mbits) + m;
}
// The code of the next value up (dir = 1) or down (dir = -1), or null where there is none.
function step(f, code, dir) {
  if (isNaN(decode(f, code).value)) return null;
  var half = pow2(f.bits - 1), s = code >= half ? 1 : 0, mag = code - s * half, ns = s, nm;
  if (mag === 0) { nm = 1; ns = dir > 0 ? 0 : 1; }
  else if ((s === 0) === (dir > 0)) nm = mag + 1;
  else { nm = mag - 1; if (nm === 0) ns = 0; }
  if (nm >= half) return null;
  var c = ns * half + nm;
  return isNaN(decode(f, c).value) ? null : c;
}
// What a reader typed, as a float64 (NaN for nan), or undefined if it is not a number.
function parseTyped(text) {
  var t = text.trim().replace(/−/g, "-").replace(/∞/g, "inf").toLowerCase();
  var words = {"inf": Infinity, "+inf": Infinity, "infinity": Infinity, "+infinity": Infinity,
               "-inf": -Infinity, "-infinity": -Infinity, "nan": NaN};
  if (t in words) return words[t];
  if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/.test(t)) return undefined;
  return Number(t);
}
// The routine, for the book's tests (they compare it with quantlab over whole formats).
root.qlfRoutine = {formats: FMT, decode: decode, encode: encode, roundTo: roundTo, step: step,
                   parse: parseTyped};

var ctl = {format: $("select[data-role=format]"), value: $("input[data-role=value]"),
           store: $("button[data-role=store]"), down: $("button[data-role=down]"),
           up: $("button[data-role=up]"), bits: $("[data-role=bits]")};
var st = {f: FMT[D.initial.format], code: D.initial.code, typed: null, note: ""};
var FIELD_NAMES = {sign: "sign", exp: "exponent", man: "mantissa"};

function buildBits() {
  var f = st.f;
  clear(ctl.bits);
  var groups = [["sign", 1], ["exp", f.ebits], ["man", f.mbits]], bit = f.bits - 1;
  groups.forEach(function (g) {
    var box = htmlEl(ctl.bits, "div", {"class": "qlf-field qlf-" + g[0]});
    var label = g[0] === "sign" ? "sign" : FIELD_NAMES[g[0]] + " · " + g[1] + " bits" +
      (g[0] === "exp" ? ", bias " + f.bias : "");
    htmlEl(box, "span", {"class": "qlf-fieldname"}, label);
    var cells = htmlEl(box, "span", {"class": "qlf-cells"});
    for (var i = 0; i < g[1]; i++, bit--) {
      var name = g[0] === "sign" ? "sign bit" : FIELD_NAMES[g[0]] + " bit " + (g[1] - i) + " of " + g[1];
      htmlEl(cells, "button", {type: "button", "class": "qlf-bit", "data-bit": bit, "aria-label": name,
                               "aria-pressed": "false"}, "0");
    }
  });
}

function hex(code, bits) {
  var s = code.toString(16).toUpperCase();
  while (s.length < Math.ceil(bits / 4)) s = "0" + s;
  return "0x" + s;
}
function setOut(name, text, value) {
  var n = putText($("[data-out=" + name + "]"), text);
  if (value === undefined) n.removeAttribute("data-value");
  else n.setAttribute("data-value", value === null ? "none" : raw(value));
  return n;
}
function power(parent, base, exp) {
  parent.appendChild(document.createTextNode(base));
  htmlEl(parent, "sup", {}, exp);
}
function formula(d) {
  var f = st.f, n = $("[data-out=formula]"), sgn = d.sign ? "−1" : "+1", den = pow2(f.mbits);
  clear(n);
  var text = function (t) { n.appendChild(document.createTextNode(t)); };
  if (d.kind === "nan") {
    text(f.has_inf ? "Exponent all ones, mantissa not zero: NaN (not a number)."
                   : "Exponent and mantissa all ones: NaN (not a number), the only one this format has.");
  } else if (d.kind === "inf") {
    text("Exponent all ones, mantissa zero: " + (d.sign ? "−∞" : "+∞") + ".");
  } else if (d.kind === "zero") {
    text("Exponent and mantissa all zero: " + (d.sign ? "−0 (equal to 0)." : "0."));
  } else if (d.kind === "subnormal") {
    text("Subnormal (exponent 0): " + sgn + " × ");
    power(n, "2", "1 − " + f.bias);
    text(" × (0 + " + d.mantissa + " / " + den + ") = " + exact(d.value));
  } else {
    text(sgn + " × ");
    power(n, "2", d.exponent + " − " + f.bias);
    text(" × (1 + " + d.mantissa + " / " + den + ") = " + exact(d.value));
  }
}
function facts() {
  var f = st.f, body = $("table[data-role=facts] tbody"), nanCount = 2 * (pow2(f.mbits) - 1);
  clear(body);
  var rows = [
    ["Bits", f.bits + " = 1 sign + " + f.ebits + " exponent + " + f.mbits + " mantissa; bias " + f.bias],
    ["Infinity", f.has_inf ? "yes: exponent all ones, mantissa 0"
                           : "no: a value beyond the largest is stored as the largest (saturates)"],
    ["NaN", f.nan === "ieee" ? "yes: exponent all ones, mantissa not 0 (" + thousands(nanCount) + " patterns)"
          : f.nan === "all_ones" ? "only one per sign: every exponent and mantissa bit 1"
          : "no: every pattern is a number"],
    ["Subnormals", "yes: exponent 0, evenly spaced down to the smallest below", f.min_subnormal],
    ["Largest value", exact(f.max), f.max],
    ["Smallest normal", "2^" + f.emin + " = " + exact(f.min_normal), f.min_normal],
    ["Smallest subnormal", "2^" + (f.emin - f.mbits) + " = " + exact(f.min_subnormal), f.min_subnormal],
    ["Spacing just above 1", "2^−" + f.mbits + " = " + exact(f.eps), f.eps],
    ["Finite values", thousands(f.levels) + " (+0 and −0 counted once)", f.levels]
  ];
  rows.forEach(function (r) {
    var tr = htmlEl(body, "tr", {"data-fact": r[0]});
    htmlEl(tr, "th", {scope: "row"}, r[0]);
    var td = putText(htmlEl(tr, "td", {}), r[1].replace(/-/g, "−"));
    if (r[2] !== undefined) td.setAttribute("data-value", raw(r[2]));
  });
}
function typedOut() {
  var box = $("[data-role=typed]");
  clear(box);
  if (st.note) { htmlEl(box, "p", {"class": "qlf-note", "data-out": "note"}, st.note); }
  if (!st.typed) return;
  var f = st.f, x = st.typed.x, v = decode(f, st.code).value, err, rel;
  if (isFinite(x) && isFinite(v)) err = v - x;
  else err = (x === v) ? 0 : NaN;
  rel = (x !== 0 && isFinite(x)) ? Math.abs(err) / Math.abs(x) : NaN;
  var p = htmlEl(box, "p", {});
  var put = function (label, name, shown, value) {
    p.appendChild(document.createTextNode(label));
    return putText(htmlEl(p, "strong", {"data-out": name, "data-value": raw(value)}), shown);
  };
  put("You typed ", "typed", exact(x), x);
  put("; " + f.name + " stores ", "stored", exact(v), v);
  put(". Rounding error, stored − typed: ", "error", isNaN(err) ? "undefined" : sig(err, 4), err);
  put(" (relative ", "relerr", isNaN(rel) ? "undefined" : sig(rel, 3), rel);
  p.appendChild(document.createTextNode(")."));
  if (isFinite(x) && Math.abs(x) > f.max) {
    putText(htmlEl(box, "p", {"class": "qlf-note"}), f.has_inf
      ? "Beyond the largest value (" + exact(f.max) + ") the format rounds to ∞ from the halfway point to 2^" + (f.emax + 1) + " on."
      : "Beyond the largest value, " + f.name + " saturates: it stores " + exact(f.max) + ".");
  } else if (isFinite(x) && x !== 0 && v === 0) {
    putText(htmlEl(box, "p", {"class": "qlf-note"}), "Smaller than half the smallest subnormal: stored as zero (underflow).");
  }
}
function render() {
  var f = st.f, d = decode(f, st.code);
  $$("button.qlf-bit").forEach(function (b) {
    var i = Number(b.dataset.bit), on = Math.floor(st.code / pow2(i)) % 2 === 1;
    b.textContent = on ? "1" : "0";
    b.setAttribute("aria-pressed", on ? "true" : "false");
  });
  formula(d);
  setOut("value", exact(d.value), d.value);
  setOut("kind", d.kind);
  setOut("code", hex(st.code, f.bits), st.code);
  var dn = step(f, st.code, -1), up = step(f, st.code, 1);
  var dv = dn === null ? null : decode(f, dn).value, uv = up === null ? null : decode(f, up).value;
  setOut("down", dv === null ? "none" : exact(dv), dv);
  setOut("up", uv === null ? "none" : exact(uv), uv);
  ctl.down.disabled = dn === null;
  ctl.up.disabled = up === null;
  $$("button[data-role=special]").forEach(function (b) {
    var k = b.dataset.special;
    b.disabled = (k === "inf" && !f.has_inf) || (k === "nan" && f.nan_code === null);
  });
  typedOut();
  root.dataset.format = f.name;
  root.dataset.code = String(st.code);
}
function storeText(text) {
  var x = parseTyped(text);
  st.note = "";
  if (x === undefined) {
    st.note = "“" + text + "” is not a number: type something like 0.1, -2.5e-3, inf or nan.";
    st.typed = null;
  } else if (isNaN(x) && st.f.nan_code === null) {
    st.note = st.f.name + " has no NaN: there is no bit pattern to store it in.";
    st.typed = null;
  } else {
    st.typed = {text: text, x: x};
    st.code = encode(st.f, x);
  }
  render();
}

ctl.bits.addEventListener("click", function (ev) {
  var b = ev.target.closest("button.qlf-bit");
  if (!b) return;
  var w = pow2(Number(b.dataset.bit));
  st.code += (Math.floor(st.code / w) % 2 === 1) ? -w : w;
  st.typed = null;
  st.note = "";
  render();
});
ctl.format.addEventListener("change", function () {
  var old = decode(st.f, st.code).value;
  st.f = FMT[ctl.format.value];
  st.code = 0;  // a valid pattern of the new format, should nothing be storable in it
  buildBits();
  facts();
  if (st.typed) { storeText(st.typed.text); return; }
  // no typed number: store the value the bits showed in the new format
  ctl.value.value = isNaN(old) ? "nan" : raw(old).replace("Infinity", "inf");
  storeText(ctl.value.value);
});
ctl.store.addEventListener("click", function () { storeText(ctl.value.value); });
ctl.value.addEventListener("keydown", function (ev) {
  if (ev.key === "Enter") { ev.preventDefault(); storeText(ctl.value.value); }
});
ctl.value.addEventListener("change", function () { storeText(ctl.value.value); });
[ctl.down, ctl.up].forEach(function (b, i) {
  b.addEventListener("click", function () {
    var c = step(st.f, st.code, i ? 1 : -1);
    if (c === null) return;
    st.code = c;
    st.typed = null;
    st.note = "";
    render();
  });
});
$$("button[data-role=special]").forEach(function (b) {
  b.addEventListener("click", function () {
    var f = st.f, k = b.dataset.special;
    var c = {zero: 0, one: encode(f, 1), max: encode(f, f.max), min_normal: encode(f, f.min_normal),
             min_subnormal: encode(f, f.min_subnormal), inf: encode(f, Infinity), nan: f.nan_code}[k];
    if (c === null || c === undefined) return;
    st.code = c;
    st.typed = null;
    st.note = "";
    render();
  });
});
buildBits();
facts();
storeText(ctl.value.value);
