// Open pages of the built book in headless Chromium and report what happened.
//
// Usage: node tests/browser/check_pages.mjs SPEC.json [REPORT.json]
//
// SPEC (JSON):
// {
//   "baseUrl": "http://127.0.0.1:8000/",        // where _build/html is served
//   "pages": ["index.html", "chapters/02_explorer.html", ...] // paths relative to baseUrl
//        or [{"path": "...", "actions": [ ... ]}, ...],
//   "chromium": "/usr/bin/chromium",             // optional
//   "checkLinks": true,                          // optional: check internal hrefs and anchors
//   "settleMs": 300,                             // optional: wait after load for late requests
//   "timeoutMs": 60000                           // optional: per navigation
// }
//
// Actions run in order after a page loaded; each one's result is reported:
//   {"type": "setRange", "selector": "input[type=range]", "value": 4}   // set + input/change events
//   {"type": "select", "selector": "select", "value": "int4"}
//   {"type": "click", "selector": "button"}
//   {"type": "fill", "selector": "input", "value": "text"}
//   {"type": "press", "selector": "input", "key": "ArrowRight"}
//   {"type": "wait", "ms": 200}
//   {"type": "waitFor", "selector": "img.plot", "state": "visible"}
//   {"type": "waitForFunction", "expression": "window.done === true"}
//   {"type": "text", "selector": "#out"}             -> textContent of the first match
//   {"type": "attr", "selector": "img", "name": "src"} -> attribute of the first match
//   {"type": "count", "selector": ".cell"}           -> number of matches
//   {"type": "eval", "expression": "document.title"} -> any JSON value
//   {"type": "screenshot", "path": "/tmp/x.png", "selector": optional, "fullPage": false}
// Every action takes an optional "timeoutMs" (default 10000). A failed action is
// reported with ok=false and its error; the remaining actions still run.
//
// REPORT (JSON, to REPORT.json or stdout):
// {
//   "pages": [{"path", "url", "finalUrl", "status", "title", "external": [urls], "failed": [{url, error}],
//              "httpErrors": [{url, status}], "pageErrors": [msg], "consoleErrors": [{text, url}],
//              "brokenImages": [src], "links": [{href, target, hash}], "ids": [...],
//              "actions": [{action, ok, value, error}]}],
//   "brokenLinks": [{page, href, reason}],
//   "externalRequestCount": N
// }
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const specPath = process.argv[2];
if (!specPath) {
  console.error("usage: node check_pages.mjs SPEC.json [REPORT.json]");
  process.exit(2);
}
const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
const base = new URL(spec.baseUrl);
const settleMs = spec.settleMs ?? 300;
const timeoutMs = spec.timeoutMs ?? 60000;
const checkLinks = spec.checkLinks ?? true;

const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
const isLocal = (u) => {
  let url;
  try { url = new URL(u); } catch { return true; }
  if (["data:", "blob:", "about:", "javascript:"].includes(url.protocol)) return true;
  if (url.protocol === "file:") return true;
  return LOCAL_HOSTS.has(url.hostname);
};
const stripHash = (u) => { const x = new URL(u); x.hash = ""; return x.toString(); };

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ql-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: spec.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
  viewport: { width: 1280, height: 900 },
});

// Every request from any page: anything that leaves the machine is recorded, and
// aborted so that the test never actually talks to the outside.
let current = null;
const externalAll = [];
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (!isLocal(url)) {
    externalAll.push(url);
    if (current) current.external.push(url);
    return route.abort("blockedbyclient");
  }
  return route.continue();
});

async function runAction(page, a) {
  const out = { action: a, ok: true };
  const t = a.timeoutMs ?? 10000;   // per action; a missing element fails the action, not the run
  try {
    switch (a.type) {
      case "setRange":
        await page.locator(a.selector).first().evaluate((el, v) => {
          el.value = String(v);
          el.dispatchEvent(new Event("input", { bubbles: true }));
          el.dispatchEvent(new Event("change", { bubbles: true }));
        }, a.value, { timeout: t });
        break;
      case "select": await page.locator(a.selector).first().selectOption(String(a.value), { timeout: t }); break;
      case "click": await page.locator(a.selector).first().click({ timeout: t }); break;
      case "fill": await page.locator(a.selector).first().fill(String(a.value), { timeout: t }); break;
      case "press": await page.locator(a.selector).first().press(a.key, { timeout: t }); break;
      case "wait": await page.waitForTimeout(a.ms ?? 100); break;
      case "waitFor":
        await page.locator(a.selector).first().waitFor({ state: a.state ?? "visible", timeout: t });
        break;
      case "waitForFunction":
        await page.waitForFunction(a.expression, null, { timeout: t });
        break;
      case "text": out.value = await page.locator(a.selector).first().textContent({ timeout: t }); break;
      case "attr": out.value = await page.locator(a.selector).first().getAttribute(a.name, { timeout: t }); break;
      case "count": out.value = await page.locator(a.selector).count(); break;
      case "eval": out.value = await page.evaluate(a.expression); break;
      case "screenshot":
        if (a.selector) await page.locator(a.selector).first().screenshot({ path: a.path });
        else await page.screenshot({ path: a.path, fullPage: a.fullPage ?? false });
        out.value = a.path;
        break;
      default: throw new Error(`unknown action type ${JSON.stringify(a.type)}`);
    }
  } catch (e) {
    out.ok = false;
    out.error = String(e && e.message ? e.message : e).split("\n")[0];
  }
  return out;
}

// Evaluate in the page, retrying while a redirect (meta refresh) replaces the document.
async function stableEvaluate(page, fn, arg) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await page.evaluate(fn, arg);
    } catch (e) {
      if (attempt >= 4 || !/context was destroyed|navigat/i.test(String(e))) throw e;
      await page.waitForLoadState("load", { timeout: timeoutMs }).catch(() => {});
      await page.waitForTimeout(200);
    }
  }
}

const reports = [];
for (const entry of spec.pages) {
  const rel = typeof entry === "string" ? entry : entry.path;
  const actions = typeof entry === "string" ? [] : (entry.actions ?? []);
  const url = new URL(rel, base).toString();
  const rep = {
    path: rel, url, finalUrl: null, status: null, title: null, external: [], failed: [], httpErrors: [],
    pageErrors: [], consoleErrors: [], brokenImages: [], links: [], ids: [], actions: [],
  };
  current = rep;
  const page = await context.newPage();
  page.on("pageerror", (err) => rep.pageErrors.push(String(err && err.message ? err.message : err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") {
      const loc = msg.location();
      rep.consoleErrors.push({ text: msg.text(), url: loc && loc.url ? loc.url : "" });
    }
  });
  page.on("requestfailed", (req) => {
    const f = req.failure();
    if (isLocal(req.url())) rep.failed.push({ url: req.url(), error: f ? f.errorText : "failed" });
  });
  page.on("response", (res) => {
    if (res.status() >= 400 && isLocal(res.url())) rep.httpErrors.push({ url: res.url(), status: res.status() });
  });
  try {
    const resp = await page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    rep.status = resp ? resp.status() : null;
    await page.waitForLoadState("networkidle", { timeout: timeoutMs }).catch(() => {});
    // MathJax typesets after load; wait for it where the page uses it.
    await page.evaluate(() => (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) || null)
      .catch(() => {});
    await page.waitForTimeout(settleMs);
    await page.waitForLoadState("networkidle", { timeout: timeoutMs }).catch(() => {});
    rep.title = await stableEvaluate(page, () => document.title);
    rep.finalUrl = page.url();   // differs from url after a redirect (the book's root index.html)
    const info = await stableEvaluate(page, () => ({
      ids: [...document.querySelectorAll("[id]")].map((e) => e.id)
        .concat([...document.querySelectorAll("a[name]")].map((e) => e.getAttribute("name"))),
      links: [...document.querySelectorAll("a[href]")].map((a) => ({ raw: a.getAttribute("href"), href: a.href })),
      images: [...document.images].map((img) => ({
        src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0, lazy: img.loading === "lazy",
      })),
    }));
    rep.ids = info.ids;
    rep.links = info.links;
    // Lazy images below the fold have not loaded yet: load them explicitly.
    for (const img of info.images) {
      if (img.ok) continue;
      const ok = await page.evaluate(async (src) => {
        const i = new Image(); i.src = src;
        try { await i.decode(); return i.naturalWidth > 0; } catch { return false; }
      }, img.src);
      if (!ok) rep.brokenImages.push(img.src);
    }
    for (const a of actions) rep.actions.push(await runAction(page, a));
  } catch (e) {
    rep.pageErrors.push(`navigation failed: ${String(e && e.message ? e.message : e).split("\n")[0]}`);
  }
  await page.close();
  current = null;
  reports.push(rep);
}

// Internal links: the target must exist, and its #anchor must be an id on that page.
const brokenLinks = [];
if (checkLinks) {
  const idsByUrl = new Map();
  for (const r of reports) {
    if (r.finalUrl) idsByUrl.set(stripHash(r.finalUrl), new Set(r.ids));
    if (stripHash(r.url) === stripHash(r.finalUrl ?? r.url)) idsByUrl.set(stripHash(r.url), new Set(r.ids));
  }
  const statusCache = new Map();
  const fetchStatus = async (u) => {
    if (!statusCache.has(u)) {
      let s;
      try { s = (await fetch(u, { method: "GET" })).status; } catch (e) { s = `error: ${e.message}`; }
      statusCache.set(u, s);
    }
    return statusCache.get(u);
  };
  const anchorCache = new Map();
  const idsOf = async (u) => {
    if (idsByUrl.has(u)) return idsByUrl.get(u);
    if (!anchorCache.has(u)) {
      const page = await context.newPage();
      let ids = new Set();
      try {
        await page.goto(u, { waitUntil: "load", timeout: timeoutMs });
        ids = new Set(await page.evaluate(() => [...document.querySelectorAll("[id]")].map((e) => e.id)
          .concat([...document.querySelectorAll("a[name]")].map((e) => e.getAttribute("name")))));
      } catch { /* reported through the status check */ }
      await page.close();
      anchorCache.set(u, ids);
    }
    return anchorCache.get(u);
  };
  for (const r of reports) {
    for (const l of r.links) {
      let target;
      try { target = new URL(l.href); } catch { brokenLinks.push({ page: r.path, href: l.raw, reason: "unparsable" }); continue; }
      if (!["http:", "https:"].includes(target.protocol)) continue;   // mailto:, javascript:
      if (target.origin !== base.origin) continue;                      // external links are not loads
      const noHash = stripHash(target.toString());
      const status = await fetchStatus(noHash);
      if (status !== 200) { brokenLinks.push({ page: r.path, href: l.raw, reason: `HTTP ${status}` }); continue; }
      const hash = decodeURIComponent(target.hash.replace(/^#/, ""));
      if (hash && noHash.endsWith(".html")) {
        const ids = await idsOf(noHash);
        if (!ids.has(hash)) brokenLinks.push({ page: r.path, href: l.raw, reason: `no element with id "${hash}"` });
      }
    }
  }
}

await context.close();
fs.rmSync(userDataDir, { recursive: true, force: true });

const report = {
  pages: reports.map((r) => ({ ...r, ids: undefined, idCount: r.ids.length })),
  brokenLinks,
  externalRequestCount: externalAll.length,
  externalRequests: [...new Set(externalAll)],
};
const text = JSON.stringify(report, null, 1);
if (process.argv[3]) fs.writeFileSync(process.argv[3], text);
else process.stdout.write(text + "\n");
