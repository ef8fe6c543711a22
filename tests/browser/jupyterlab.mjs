// Open notebooks in a running JupyterLab in headless Chromium, as a student would: look at
// them as they open (before anything runs), clear the outputs, run all cells, and report.
//
// Usage: node tests/browser/jupyterlab.mjs SPEC.json REPORT.json
//
// SPEC (JSON):
// {
//   "baseUrl": "http://127.0.0.1:8888/",      // JupyterLab's server
//   "token": "...",                             // its token
//   "chromium": "/usr/bin/chromium",
//   "notebooks": ["02_explorer.ipynb", ...],    // paths relative to the server's root
//   "liveCell": "explorer.Explorer(",           // code that marks the cell showing the live widget
//   "slider": {"keys": ["End", "ArrowLeft"]},   // keys pressed on the live widget's slider
//   "firstOpenWait": {"02_explorer.ipynb": [".qlx"]}, // optional: selectors to wait for on opening
//   "screenshots": "/tmp/dir"                    // optional: a screenshot per notebook and stage
//   "timeoutMs": 120000                          // optional: for running all cells
// }
//
// REPORT (JSON): {"notebooks": [{name, ok, error, firstOpen, run, live, static, feedback,
//   stderr, timings}], "external": [urls], "pageErrors": [...]}
//   firstOpen: what the notebook shows before it runs: for the kernel-free explorer (.qlx)
//     its cards, still-picture dots, svg count and card background; for the live cell its
//     output's text and whether it holds an image.
//   run: the code cells' prompts after "Run All Cells" and how many are still running.
//   live: the live widget's cards and image before and after each key on its slider, with
//     the milliseconds each redraw took.
//   static: the kernel-free explorer once its cell ran (trusted output: its script runs).
//   feedback: texts of outputs holding a checker's mark (✓ or ✗).
//   stderr: texts of error and stderr outputs.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [specPath, reportPath] = process.argv.slice(2);
if (!specPath || !reportPath) {
  console.error("usage: node jupyterlab.mjs SPEC.json REPORT.json");
  process.exit(2);
}
const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
const timeoutMs = spec.timeoutMs ?? 120000;
const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
const isLocal = (u) => {
  try {
    const url = new URL(u);
    return ["data:", "blob:", "about:"].includes(url.protocol) || LOCAL.has(url.hostname);
  } catch { return true; }
};

const browser = await chromium.launch({
  executablePath: spec.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const external = [];
const pageErrors = [];
// One browser context per notebook (JupyterLab windows in one context negotiate their names
// through shared storage); every request that would leave the machine is recorded and aborted.
async function newContext() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (!isLocal(url)) { external.push(url); return route.abort("blockedbyclient"); }
    return route.continue();
  });
  return context;
}

// What the open notebook shows now (run inside the page).
const LOOK = (liveCell) => {
  const cells = [...document.querySelectorAll(".jp-Notebook .jp-Cell.jp-CodeCell")];
  const source = (c) => [...c.querySelectorAll(".jp-InputArea-editor .cm-line")].map((l) => l.textContent).join("\n");
  const out = { codeCells: cells.length, prompts: [], qlx: null, live: null, feedback: [], stderr: [] };
  // figure cards by their label (an untrusted output loses its data-* attributes)
  const cards = (box) => Object.fromEntries([...box.querySelectorAll(".qlx-fig")].map(
    (f) => [(f.querySelector(".k") || {}).textContent, (f.querySelector(".v") || {}).textContent]));
  for (const c of cells) {
    const prompt = c.querySelector(".jp-InputArea-prompt");
    out.prompts.push(prompt ? prompt.textContent.trim() : "");
    for (const o of c.querySelectorAll(".jp-OutputArea-output")) {
      const mime = o.getAttribute("data-mime-type") || "";
      const text = o.textContent || "";
      if (mime.includes("stderr")) out.stderr.push(text.slice(0, 2000));
      if (/[✓✗]/.test(text) && !o.closest(".jp-OutputArea-output .jp-OutputArea-output")) out.feedback.push(text.slice(0, 500));
    }
    const root = c.querySelector(".jp-OutputArea-output .qlx");
    if (root && !out.qlx) {
      const fig = root.querySelector(".qlx-fig");
      out.qlx = {
        ready: root.dataset.ready === "1",
        key: root.dataset.key || null,
        cards: cards(root),
        regime: (root.querySelector(".qlx-regime") || {}).textContent || "",
        stillDots: root.querySelectorAll(".qlx-still-o, .qlx-still-q").length,
        svgs: root.querySelectorAll("svg").length,
        histPath: !!root.querySelector("svg[data-role=hist] path[data-role=hist-quantized]"),
        cardBackground: fig ? getComputedStyle(fig).backgroundColor : null,
        cardWidth: fig ? fig.getBoundingClientRect().width : 0,
      };
    }
    if (source(c).includes(liveCell)) {
      const area = c.querySelector(".jp-OutputArea");
      const img = area && area.querySelector("img");
      const widget = area && area.querySelector(".jupyter-widgets, .widget-vbox");
      out.live = {
        text: area ? (area.textContent || "").trim().slice(0, 300) : "",
        image: !!img, imageWidth: img ? img.naturalWidth : 0,
        widget: !!widget,
        cards: widget ? cards(widget) : {},
        src: widget && widget.querySelector(".widget-image") ? widget.querySelector(".widget-image").src : null,
        slider: widget ? (widget.querySelector(".widget-readout") || {}).textContent || null : null,
      };
    }
  }
  return out;
};

async function menu(page, top, item) {
  await page.locator("#jp-MainMenu").getByRole("menuitem", { name: top, exact: true }).click();
  await page.getByRole("menuitem", { name: item, exact: true }).click();
}

async function shot(page, name) {
  if (spec.screenshots) await page.screenshot({ path: path.join(spec.screenshots, name), fullPage: false });
}

// The notebooks are opened side by side, each in its own page and workspace, and run at the
// same time (each kernel on its own core where there are several).
async function visit(name, index) {
  const rep = { name, ok: false, error: null, timings: {} };
  const context = await newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message || e}`));
  try {
    const t0 = Date.now();
    await page.goto(`${spec.baseUrl}lab/workspaces/ql${index}/tree/${name}?reset&token=${spec.token}`,
                    { waitUntil: "load" });
    await page.locator(".jp-Notebook .jp-Cell").first().waitFor({ timeout: 60000 });
    await page.locator(".jp-Notebook-ExecutionIndicator[data-status=idle]").first().waitFor({ timeout: 60000 });
    for (const sel of (spec.firstOpenWait || {})[name] || []) {  // large outputs render late
      await page.locator(sel).first().waitFor({ state: "attached", timeout: 60000 });
    }
    await page.waitForTimeout(1000);   // outputs and widget views settle
    rep.timings.open_ms = Date.now() - t0;
    rep.firstOpen = await page.evaluate(LOOK, spec.liveCell);
    await shot(page, `${name}.first-open.png`);
    if (spec.screenshots && rep.firstOpen.qlx) {
      await page.locator(".jp-OutputArea-output .qlx").first().screenshot({ path: path.join(spec.screenshots, `${name}.first-open.qlx.png`) });
    }
    if (spec.screenshots && rep.firstOpen.live) {
      await page.locator(".jp-CodeCell", { hasText: spec.liveCell }).first().screenshot({ path: path.join(spec.screenshots, `${name}.first-open.live.png`) });
    }

    const t1 = Date.now();
    await menu(page, "Edit", "Clear Outputs of All Cells");
    await menu(page, "Run", "Run All Cells");
    // Done when every code cell has a number in its prompt and the kernel is idle again, or a
    // cell failed (JupyterLab stops a run at an error: the error is the result, reported below).
    // A "Run All" that the page dropped (the kernel still connecting on a loaded machine: the
    // kernel idle, no cell running or queued, cells never run) is issued once more and counted.
    rep.runAllClicks = 1;
    const state = () => page.evaluate(() => {
      const prompts = [...document.querySelectorAll(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")]
        .map((p) => p.textContent.trim());
      const indicator = document.querySelector(".jp-Notebook-ExecutionIndicator");
      const errors = [...document.querySelectorAll(".jp-OutputArea-output")]
        .filter((o) => (o.getAttribute("data-mime-type") || "").includes("stderr") && /Error|Traceback/.test(o.textContent || ""))
        .map((o) => (o.textContent || "").slice(0, 300));
      return { prompts, idle: !!indicator && indicator.dataset.status === "idle", errors };
    });
    let stalled = 0;
    for (;;) {
      const st = await state();
      const numbered = st.prompts.length > 0 && st.prompts.every((p) => /\[\d+\]/.test(p));
      if (st.idle && (numbered || st.errors.length)) {
        if (!numbered) throw new Error(`a cell failed: ${st.errors[0]}`);
        break;
      }
      const waiting = st.prompts.some((p) => p.includes("*"));
      stalled = st.idle && !waiting ? stalled + 1 : 0;
      if (stalled >= 20 && rep.runAllClicks < 2) {   // 5 s idle with cells never run
        await menu(page, "Run", "Run All Cells");
        rep.runAllClicks += 1;
        stalled = 0;
      }
      if (Date.now() - t1 > timeoutMs) {
        throw new Error(`not done after ${timeoutMs} ms (Run All clicked ${rep.runAllClicks} times): ` +
                        `prompts ${JSON.stringify(st.prompts)}, kernel ${st.idle ? "idle" : "busy"}`);
      }
      await page.waitForTimeout(250);
    }
    rep.timings.run_ms = Date.now() - t1;
    await page.waitForTimeout(500);
    const after = await page.evaluate(LOOK, spec.liveCell);
    rep.run = { prompts: after.prompts, codeCells: after.codeCells };
    rep.static = after.qlx;
    rep.feedback = after.feedback;
    rep.stderr = after.stderr;
    await shot(page, `${name}.after-run.png`);

    if (after.live && after.live.widget) {
      rep.live = { before: after.live, steps: [] };
      const cell = page.locator(".jp-CodeCell", { hasText: spec.liveCell }).first();
      await cell.scrollIntoViewIfNeeded();
      const handle = cell.locator(".widget-slider .noUi-handle, .widget-slider .ui-slider-handle").first();
      let last = after.live;
      for (const key of (spec.slider && spec.slider.keys) || ["End"]) {
        const t = Date.now();
        await handle.focus();
        await handle.press(key);
        await page.waitForFunction(([prev, marker]) => {
          const c = [...document.querySelectorAll(".jp-CodeCell")].find(
            (x) => [...x.querySelectorAll(".cm-line")].some((l) => l.textContent.includes(marker)));
          const w = c && c.querySelector(".jupyter-widgets, .widget-vbox");
          const img = w && w.querySelector(".widget-image");
          return !!img && img.src !== prev;
        }, [last.src, spec.liveCell], { timeout: 15000, polling: 20 });
        const ms = Date.now() - t;
        await page.waitForTimeout(150);
        const now = (await page.evaluate(LOOK, spec.liveCell)).live;
        rep.live.steps.push({ key, ms, ...now });
        last = now;
      }
      await shot(page, `${name}.slider.png`);
    }
    rep.ok = true;
  } catch (e) {
    rep.error = String(e && e.message ? e.message : e).split("\n").slice(0, 3).join(" ");
    await shot(page, `${name}.error.png`).catch(() => {});
  }
  await context.close();
  return rep;
}
const reports = await Promise.all(spec.notebooks.map(visit));

await browser.close();
fs.writeFileSync(reportPath, JSON.stringify({ notebooks: reports, external: [...new Set(external)], pageErrors }, null, 1));
