/* Script of the kernel-free Quantization Explorer (quantlab.explorer.static_html).
   The page inlines this file after this comment, with __ROOT__ replaced by the id of
   the explorer's outer element. It picks the precomputed entry for the controls and
   draws it: it maps values to pixels and counts to heights; it never quantizes anything.
   Every word it shows comes with the data (D.text, D.strings, the entries' texts).
   Colours come from the CSS custom properties of explorer.css (var(--qlx-...)).
   The page arrives with the initial setting rendered in Python (a still picture and
   inline styles, for viewers that drop scripts and styles); the script removes those and
   draws the live figures instead. */
(function () {
  var root = document.getElementById("__ROOT__");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var D = JSON.parse(root.querySelector("script[data-role=data]").textContent);
  var T = D.text, NS = "http://www.w3.org/2000/svg";
  var $ = function (sel) { return root.querySelector(sel); };
  var still = $("[data-role=still]");
  if (still) still.parentNode.removeChild(still);
  [root].concat([].slice.call(root.querySelectorAll("[style]"))).forEach(function (n) {
    n.removeAttribute("style");
  });
  var ctl = {
    bits: $("input[data-role=bits]"), source: $("select[data-role=source]"),
    granularity: $("select[data-role=granularity]"), symmetric: $("select[data-role=symmetric]"),
    family: $("select[data-role=family]")
  };
  var preset = $("select[data-role=preset]");
  Object.keys(D.sources).forEach(function (k) {  // the strip's weights, as numbers
    var src = D.sources[k];
    src.values = src.strip.map(function (v) { return v / D.unit; });
  });
  function el(parent, tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }
  function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }
  // Drawing width in SVG units: the rendered width of the figures, between 360 and 760,
  // so that text keeps its CSS size on a phone instead of shrinking with a 760-wide
  // drawing (narrow figures get a taller histogram and wrapped titles).
  var W = 760, ML = 88, MR = 16, lo = -D.window, hi = D.window, NARROW = 600;
  function drawWidth() {
    var w = $("svg[data-role=strip]").getBoundingClientRect().width;
    return w > 0 ? Math.max(360, Math.min(760, w)) : 760;
  }
  // A text of several lines: words move to a new line when the line would be wider than
  // maxW (measured by the browser); returns the number of lines.
  function wrapped(svg, x, y, text, cls, maxW, lineH) {
    var t = el(svg, "text", {x: x, y: y, "class": cls});
    var words = text.split(" "), line = el(t, "tspan", {x: x}), n = 1;
    words.forEach(function (word) {
      var before = line.textContent;
      line.textContent = before ? before + " " + word : word;
      if (before && line.getComputedTextLength() > maxW) {
        line.textContent = before;
        line = el(t, "tspan", {x: x, dy: lineH}, word);
        n++;
      }
    });
    return n;
  }
  function setFig(n, text) {
    // long numbers (4,294,967,296 levels) may break after a comma and use a smaller font
    n.textContent = "";
    String(text).split(",").forEach(function (part, i) {
      if (i) { n.appendChild(document.createTextNode(",")); n.appendChild(document.createElement("wbr")); }
      n.appendChild(document.createTextNode(part));
    });
    var long = String(text).length > 9;
    n.classList.toggle("qlx-long", long);
    if (long) n.title = text; else n.removeAttribute("title");
  }
  function px(v) { return ML + (v - lo) / (hi - lo) * (W - ML - MR); }
  function xTicks(svg, y) {
    [-0.4, -0.2, 0, 0.2, 0.4].forEach(function (t) {
      el(svg, "line", {x1: px(t), x2: px(t), y1: y, y2: y + 5, "class": "qlx-axis"});
      el(svg, "text", {x: px(t), y: y + 18, "text-anchor": "middle"}, String(t));
    });
    el(svg, "line", {x1: ML, x2: W - MR, y1: y, y2: y, "class": "qlx-axis"});
  }
  function drawStrip(src, e) {
    var svg = $("svg[data-role=strip]"); clear(svg);
    var lh = W < NARROW ? 17 : 16;
    var nt = wrapped(svg, 4, 16, T.strip_title + ": " + (e.ok ? e.fmt : T.not_available),
                     "qlx-title", W - 8, lh);
    var ns = wrapped(svg, 4, 34 + (nt - 1) * lh, e.title + " · " + src.where + " · " + e.gridText, "qlx-sub", W - 8, lh);
    var dy = (nt + ns - 2) * lh;
    svg.setAttribute("viewBox", "0 0 " + W + " " + (194 + dy));
    var yO = 62 + dy, yQ = 120 + dy, yA = 148 + dy;
    el(svg, "defs", {}).innerHTML = "";
    var clipId = root.id + "-clip";
    var cp = el(svg.querySelector("defs"), "clipPath", {id: clipId});
    el(cp, "rect", {x: ML, y: 40 + dy, width: W - ML - MR, height: yA - 40 - dy});
    var g = el(svg, "g", {"clip-path": "url(#" + clipId + ")"});
    if (e.ok && e.grid) {
      e.grid.forEach(function (v) {
        el(g, "line", {x1: px(v), x2: px(v), y1: yO - 14, y2: yQ + 14, "class": "qlx-gridline"});
      });
    }
    if (e.ok) {
      src.values.forEach(function (v, i) {
        el(g, "line", {x1: px(v), y1: yO, x2: px(e.snap[i]), y2: yQ,
                       stroke: "var(--qlx-muted)", "stroke-width": 0.7, opacity: 0.6});
      });
      e.snap.forEach(function (v) {
        el(g, "circle", {cx: px(v), cy: yQ, r: 4, fill: "var(--qlx-quant)", "fill-opacity": 0.55,
                         stroke: "var(--qlx-quant)"});
      });
    }
    src.values.forEach(function (v) {
      el(g, "circle", {cx: px(v), cy: yO, r: 3.5, fill: "var(--qlx-orig)", "fill-opacity": 0.6,
                       stroke: "var(--qlx-orig)"});
    });
    el(svg, "text", {x: ML - 8, y: yO + 4, "text-anchor": "end"}, T.float32);
    el(svg, "text", {x: ML - 8, y: yQ + 4, "text-anchor": "end"}, e.ok ? e.fmt : "—");
    xTicks(svg, yA);
    el(svg, "text", {x: (ML + W - MR) / 2, y: yA + 34, "text-anchor": "middle"}, T.weight_value);
  }
  var H = 270, MT = 30, MB = 52, YMIN = -3, YMAX = 2;  // log10 of % of weights (H, MT: set by drawHist)
  function py(pct) {
    var l = pct > 0 ? Math.log10(pct) : YMIN - 1;
    l = Math.max(YMIN - 0.3, Math.min(YMAX, l));
    return MT + (YMAX - l) / (YMAX - YMIN) * (H - MT - MB);
  }
  function stepPath(counts, n, close) {
    var d = "", e = D.edges, base = py(0);
    for (var i = 0; i < counts.length; i++) {
      var y = py(counts[i] / n * 100);
      d += (i === 0 ? "M" + px(e[0]) + "," + (close ? base : y) + " L" : " L") + px(e[i]) + "," + y + " L" + px(e[i + 1]) + "," + y;
    }
    if (close) d += " L" + px(e[e.length - 1]) + "," + base + " Z";
    return d;
  }
  function drawHist(src, e) {
    var svg = $("svg[data-role=hist]"); clear(svg);
    var narrow = W < NARROW, lh = narrow ? 17 : 16;
    var nt = wrapped(svg, 4, 16, src.histTitle, "qlx-title", W - 8, lh);
    MT = 30 + (nt - 1) * lh;
    H = (narrow ? 340 : 270) + (nt - 1) * lh;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var yA = H - MB;
    for (var k = YMIN; k <= YMAX; k++) {
      var y = py(Math.pow(10, k));
      el(svg, "line", {x1: ML, x2: W - MR, y1: y, y2: y, "class": "qlx-gridline"});
      el(svg, "text", {x: ML - 6, y: y + 4, "text-anchor": "end"}, String(Math.pow(10, k)).replace(/^0\./, "0."));
    }
    var clipId = root.id + "-hclip";
    var defs = el(svg, "defs", {});
    var cp = el(defs, "clipPath", {id: clipId});
    el(cp, "rect", {x: ML, y: MT - 2, width: W - ML - MR, height: yA - MT + 2});
    var g = el(svg, "g", {"clip-path": "url(#" + clipId + ")"});
    el(g, "path", {d: stepPath(src.hist, src.n, true), fill: "var(--qlx-orig)", "fill-opacity": 0.25,
                   stroke: "var(--qlx-orig)", "stroke-width": 1.2, "data-role": "hist-original"});
    if (e.ok) el(g, "path", {d: stepPath(e.hist, src.n, false), fill: "none", stroke: "var(--qlx-quant)",
                             "stroke-width": 1.8, "data-role": "hist-quantized"});
    xTicks(svg, yA);
    el(svg, "text", {x: (ML + W - MR) / 2, y: yA + 34, "text-anchor": "middle"}, T.hist_x);
    el(svg, "text", {x: 14, y: (MT + yA) / 2, "text-anchor": "middle",
                     transform: "rotate(-90 14 " + (MT + yA) / 2 + ")"}, T.hist_y);
    var lx = narrow ? ML + 8 : W - MR - 230, ly = MT + 8;
    el(svg, "rect", {x: lx, y: ly, width: 12, height: 10, fill: "var(--qlx-orig)", "fill-opacity": 0.35, stroke: "var(--qlx-orig)"});
    el(svg, "text", {x: lx + 18, y: ly + 9}, T.legend_orig);
    el(svg, "line", {x1: lx, x2: lx + 12, y1: ly + 24, y2: ly + 24, stroke: "var(--qlx-quant)", "stroke-width": 2});
    el(svg, "text", {x: lx + 18, y: ly + 28}, T.legend_quant + (e.ok ? " (" + e.fmt + ")" : ""));
    if (src.beyond) {
      el(svg, "text", narrow ? {x: ML + 8, y: ly + 50, "class": "qlx-sub"} : {x: ML + 6, y: MT + 14, "class": "qlx-sub"},
         src.beyond);
    }
  }
  // A panel (the block inspector of a block format) from its description, the one
  // quantlab renders in Python too (quantlab.book.explorer.markup.panel, the same elements):
  // the title in bold, the sentence, then tables of strings, each with its data-role and
  // data-align. Every word comes with the description; this function knows none of them.
  function node(parent, tag, text) {
    var c = document.createElement(tag);
    if (text !== undefined) c.textContent = text;
    parent.appendChild(c);
    return c;
  }
  function drawPanel(box, desc) {
    box.textContent = "";
    box.hidden = !desc;
    if (!desc) return;
    node(node(box, "p"), "strong", desc.title);
    node(box, "p", desc.text);
    desc.tables.forEach(function (t) {
      var table = node(box, "table"), r = node(node(table, "thead"), "tr"), body = node(table, "tbody");
      table.setAttribute("data-role", t.role);
      table.setAttribute("data-align", t.align);
      t.head.forEach(function (h) { node(r, "th", h); });
      t.rows.forEach(function (cells) {
        var tr = node(body, "tr");
        cells.forEach(function (v) { node(tr, "td", v); });
      });
    });
  }
  // A list of integers whose runs of zeros were written as "z<n>" (runs_of_zeros in Python).
  function zeros(list) {
    var out = [];
    list.forEach(function (v) {
      if (typeof v === "string") for (var n = +v.slice(1); n > 0; n--) out.push(0);
      else out.push(v);
    });
    return out;
  }
  // An entry as Python made it: texts from the shared list, positions back to numbers
  // (integers in units of 1/D.unit; the snapped values relative to the strip, the grid as
  // its first value and the steps between neighbours), the figures by name, the histogram whole.
  function decode(i, src) {
    var raw = D.entries[D.index[i]], e = {}, S = D.strings, u = D.unit;
    for (var k in raw) e[k] = raw[k];
    e.figs = {};
    D.figKeys.forEach(function (f, j) { e.figs[f] = raw.figs[j]; });
    e.title = S[raw.title]; e.regime = S[raw.regime]; e.gridText = S[raw.gridText];
    e.notes = raw.notes.map(function (n) { return S[n]; });
    if (!e.ok) return e;
    e.snap = raw.snap.map(function (d, j) { return (src.strip[j] + d) / u; });
    if (raw.grid) {
      var acc = 0;
      e.grid = raw.grid.map(function (d) { acc += d; return acc / u; });
    }
    if (raw.histDiff) e.hist = zeros(raw.histDiff).map(function (d, j) { return src.hist[j] + d; });
    else e.hist = zeros(raw.hist);
    return e;
  }
  // The position of the controls' setting in quantlab's all_settings(): a mixed-radix
  // number over D.axes (quantlab.explorer.settings_index).
  function index() {
    var value = {source: ctl.source.value, family: ctl.family.value,
                 granularity: ctl.granularity.value, symmetric: ctl.symmetric.value};
    var i = 0;
    ["source", "family", "granularity", "symmetric"].forEach(function (a) {
      i = i * D.axes[a].length + D.axes[a].indexOf(value[a]);
    });
    return i * D.bits.length + (+ctl.bits.value);
  }
  // A preset sets some controls; the preset control shows the first preset whose controls
  // all have their values (quantlab.explorer.preset_of).
  function control(name) {
    return name === "bits" ? D.bits[+ctl.bits.value] : ctl[name].value;
  }
  function matching() {
    for (var name in D.presets) {
      var c = D.presets[name].controls, ok = true;
      for (var k in c) if (String(control(k)) !== String(c[k])) ok = false;
      if (ok) return name;
    }
    return "";
  }
  function applyPreset() {
    var c = (D.presets[preset.value] || {}).controls || {};
    for (var k in c) {
      if (k === "bits") ctl.bits.value = String(D.bits.indexOf(c[k]));
      else ctl[k].value = c[k];
    }
    render();
  }
  function key() {
    return [ctl.source.value, D.bits[+ctl.bits.value], ctl.granularity.value,
            ctl.symmetric.value, ctl.family.value].join("|");
  }
  function render() {
    var src = D.sources[ctl.source.value], e = decode(index(), src), name = matching();
    root.dataset.key = key();
    root.querySelectorAll("[data-fig]").forEach(function (n) {
      var f = n.getAttribute("data-fig");
      if (f === "regime") n.textContent = e.regime;
      else setFig(n, e.figs[f] !== undefined ? e.figs[f] : "");
    });
    $("[data-role=notes]").textContent = e.notes.join("; ");
    preset.value = name;
    $("[data-role=about]").textContent = name ? D.presets[name].about : "";
    root.querySelectorAll(".qlx-ticks span").forEach(function (s, i) {
      s.className = i === +ctl.bits.value ? "qlx-on" : "";
    });
    ctl.bits.setAttribute("aria-valuetext", T.bits_value.replace("{bits}", D.bits[+ctl.bits.value]));
    W = drawWidth();
    root.classList.toggle("qlx-narrow", W < NARROW);
    drawStrip(src, e);
    drawHist(src, e);
    drawPanel($("[data-role=block]"), e.ok ? e.block : null);
  }
  preset.addEventListener("change", applyPreset);
  Object.keys(ctl).forEach(function (c) {
    ctl[c].addEventListener("input", render);
    ctl[c].addEventListener("change", render);
  });
  render();
  // redraw when the figures' width changes (a rotated phone, a resized window)
  if (window.ResizeObserver) {
    new ResizeObserver(function () { if (Math.abs(drawWidth() - W) > 1) render(); }).observe(root);
  }
})();
