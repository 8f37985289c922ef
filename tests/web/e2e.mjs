// End-to-end tests of Ward's web page in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core): a real `ward serve` on a
// temporary data dir with the example plugins. Each step is a user's:
// sign in, trigger from the page and watch the card move across the board,
// open the detail and see a log line appear live, cancel a running
// execution, preview an image, page through the grid, upload a plugin that
// is refused, and see buttons a token may not use disabled. A screenshot of
// each view goes to target/web-screenshots/ (SCREENSHOTS overrides).
//
// Run from the repository root: node tests/web/e2e.mjs (WARD_BIN, CHROMIUM
// override the binaries). WEB_DIR=host/web serves the page from those files
// instead of the ones built into the binary (a proxy in front of the
// server), to try a change to the page without building. Exits non-zero on
// the first failure.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const root = resolve(new URL("../..", import.meta.url).pathname);
const bin = process.env.WARD_BIN || join(root, "target/debug/ward");
const shots = process.env.SCREENSHOTS || join(root, "target/web-screenshots");
const data = mkdtempSync(join(tmpdir(), "ward-web-"));
const webDir = process.env.WEB_DIR ? resolve(process.env.WEB_DIR) : null;
mkdirSync(shots, { recursive: true });

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function check(cond, message) {
  if (!cond) fail(message);
  console.log(`ok - ${message}`);
}

// ---- the server ----------------------------------------------------------
const stops = [];
// `ward serve` with these arguments; its URL, and the page's (the same, or
// the WEB_DIR proxy's).
async function serve(args) {
  const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  stops.push(() => proc.kill("SIGTERM"));
  const url = await new Promise((res, rej) => {
    const lines = createInterface({ input: proc.stdout });
    const timer = setTimeout(() => rej(new Error("ward serve did not start")), 120000);
    lines.on("line", (line) => {
      const m = line.match(/^Ward is serving on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); res(m[1]); }
    });
    proc.on("exit", (code) => rej(new Error(`ward serve exited ${code}`)));
  });
  return { url, page: webDir ? await fromDisk(url) : url };
}

// A proxy to `upstream` that answers the page's three files from WEB_DIR.
async function fromDisk(upstream) {
  const up = new URL(upstream);
  const files = { "/": ["index.html", "text/html"], "/ui/app.js": ["app.js", "text/javascript"], "/ui/app.css": ["app.css", "text/css"] };
  const proxy = http.createServer((req, res) => {
    const file = req.method === "GET" && files[req.url.split("?")[0]];
    if (file) {
      res.writeHead(200, { "Content-Type": `${file[1]}; charset=utf-8`, "Cache-Control": "no-cache",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'" });
      res.end(readFileSync(join(webDir, file[0])));
      return;
    }
    const out = http.request({ host: up.hostname, port: up.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    out.on("error", () => res.destroy());
    res.on("close", () => out.destroy());
    req.pipe(out);
  });
  await new Promise((res) => proxy.listen(0, "127.0.0.1", res));
  stops.push(() => { proxy.closeAllConnections(); proxy.close(); });
  return `http://127.0.0.1:${proxy.address().port}`;
}

const served = await serve(["--data-dir", data, "--plugins", join(root, "plugins/target/wasm32-wasip2/release")]);
const base = served.url; // the API, for the test's own calls
const web = served.page; // where the browser goes
const admin = readFileSync(join(data, "admin.token"), "utf8").trim();

async function api(path, opts = {}) {
  const r = await fetch(`${base}/api/v1${path}`, {
    method: opts.method || "GET",
    headers: { Authorization: `Bearer ${opts.token || admin}`, "Content-Type": "application/json" },
    body: opts.json ? JSON.stringify(opts.json) : undefined,
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

async function task(spec) {
  const r = await api("/tasks", { method: "POST", json: spec });
  if (r.status !== 201) fail(`task ${spec.name}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json;
}

async function until(what, f, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) fail(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A 4×3 PNG, to be thumbnailed.
const png = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAEElEQVR4nGM4IScHRww4OQD1xwwxB+utmQAAAABJRU5ErkJggg==";

let browser;
try {
  await task({ name: "nap", action: "chaos", input: { mode: "sleep", ms: 1500 } });
  await task({ name: "talker", action: "chaos", input: { mode: "talk", lines: 30, ms: 300 } });
  await task({ name: "sleeper", action: "chaos", input: { mode: "sleep", ms: 600000 } });
  await task({ name: "thumb", action: "thumbnail", input: { image_base64: png, width: 64, height: 64 } });
  // The README's worked example: an execution with two media objects.
  await task({ name: "word-report", steps: [
    { name: "split", action: "split-text", input: { text: "{{ inputs.text }}", parts: 4 } },
    { name: "count", for_each: { items: "steps.split.outputs.parts", concurrency: 4,
      step: { action: "word-count", input: { text: "{{ item }}", top: 100 } } } },
    { name: "merge", action: "merge-counts", input: { counts: "{{ steps.count.outputs }}" } },
  ] });
  await task({ name: "greet", action: "hello", input: { name: "page" },
    input_schema: { type: "object", properties: { name: { type: "string", description: "who to greet" } }, required: ["name"] } });
  // Enough executions for more than one page of the grid (50 a page).
  for (let i = 0; i < 60; i++) await api("/tasks/hello/executions", { method: "POST", json: { input: { name: `n${i}` } } });

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const missing = []; // answers 404: none expected (no favicon asked for)
  page.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });
  const links = []; // the media links the page asks for
  page.on("request", (r) => { if (/\/media\/[^/]+\/link\b/.test(r.url())) links.push(r.url()); });
  // Signs in afresh with `secret` at `hash`.
  const signIn = async (secret, hash) => {
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(`${web}/${hash}`);
    await page.reload();
    await page.waitForSelector("#token");
    await page.fill("#token", secret);
    await page.click("button[type=submit]");
  };
  const ready = async (view) => {
    await page.waitForSelector(`main[data-ready="true"][data-view="${view}"]`, { timeout: 20000 });
  };
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  // Nothing shows without a token; a wrong one is refused.
  await page.goto(`${web}/`);
  await page.waitForSelector("#token");
  check(await page.locator("main h2").textContent() === "Sign in", "the page asks for a token first");
  await page.fill("#token", "ward_wrong");
  await page.click("button[type=submit]");
  await page.waitForSelector("[role=alert]");
  check((await page.locator("[role=alert]").textContent()).includes("unknown"), "a wrong token is refused with the API's reason");
  await page.fill("#token", admin);
  await page.click("button[type=submit]");
  await ready("board");
  check(true, "the admin token opens the board");

  // Trigger from the page (the task's input form), then watch the card.
  const nap = (await api("/tasks/nap")).json;
  await page.goto(`${web}/#/tasks/${nap.id}`);
  await page.waitForSelector("#input-json");
  await page.click("form button[type=submit]");
  await page.waitForURL(/#\/executions\//);
  const napId = page.url().split("/executions/")[1];
  await page.goto(`${web}/#/board`);
  await ready("board");
  const card = page.locator(`.card[data-id="${napId}"]`);
  await card.waitFor({ timeout: 20000 });
  const first = await card.getAttribute("data-state");
  check(["CREATED", "RUNNING"].includes(first), `the new card is on the board (${first})`);
  await page.waitForSelector(`.cards[data-state="SUCCESS"] .card[data-id="${napId}"]`, { timeout: 30000 });
  check(true, "the card moved to Succeeded when the execution ended, with no reload");
  await shot("board");
  // A task created after the board opened shows by its name, not its id.
  await task({ name: "latecomer", action: "hello", input: { name: "late" } });
  const late = (await api("/tasks/latecomer/executions", { method: "POST", json: {} })).json;
  const lateCard = page.locator(`.card[data-id="${late.id}"] a`);
  await lateCard.waitFor({ timeout: 20000 });
  await until("the new task's name shows", async () => (await lateCard.textContent()) === "latecomer", 10000);
  check(true, "a card of a task created after the board opened shows the task's name");
  // Open the detail from the card.
  await card.locator("a").click();
  await ready("executions");
  check(page.url().endsWith(`#/executions/${napId}`) && (await page.locator("h2 .badge.SUCCESS").count()) === 1,
    "the card opens the execution's detail");

  // Detail: a log line appears live.
  const talk = (await api("/tasks/talker/executions", { method: "POST", json: {} })).json;
  await page.goto(`${web}/#/executions/${talk.id}`);
  await ready("executions");
  await page.waitForSelector("pre.logs div", { timeout: 20000 });
  const before = await page.locator("pre.logs div").count();
  await until("more log lines arrive", async () => (await page.locator("pre.logs div").count()) > before, 20000);
  check((await page.locator("pre.logs").textContent()).includes("line 1 of 30"), "log lines appear live in the detail");
  await shot("detail");

  // Cancel a running execution from its detail.
  const sleep = (await api("/tasks/sleeper/executions", { method: "POST", json: {} })).json;
  await until("the sleeper runs", async () => (await api(`/executions/${sleep.id}`)).json.state === "RUNNING");
  await page.goto(`${web}/#/executions/${sleep.id}`);
  await ready("executions");
  await page.click("button:has-text('Cancel')");
  await page.waitForSelector(".answer:has-text('cancel: 200')");
  await page.waitForSelector("h2 .badge.KILLED", { timeout: 20000 });
  check(true, "cancel shows the API's answer and the execution ends KILLED");

  // An image media object is previewed inline.
  const thumb = (await api("/tasks/thumb/executions?wait=30s", { method: "POST", json: {} })).json;
  check(thumb.state === "SUCCESS", `the thumbnail ran (${thumb.state})`);
  await page.goto(`${web}/#/executions/${thumb.id}`);
  await ready("executions");
  const img = page.locator(".media img");
  await img.waitFor({ timeout: 20000 });
  await until("the preview loads", async () => img.evaluate((i) => i.complete && i.naturalWidth > 0));
  check(true, "the image media is previewed inline");
  await shot("detail-media");

  // Media are listed once each and their links signed once, however many
  // events (here: the whole stored feed, replayed on opening) re-read them.
  const report = (await api("/tasks/word-report/executions?wait=30s", { method: "POST",
    json: { input: { text: "one two three four five six seven eight one two" } } })).json;
  const reportMedia = (await api(`/executions/${report.id}/media`)).json.media;
  check(report.state === "SUCCESS" && reportMedia.length >= 2, `the word report ran with ${reportMedia.length} media (${report.state})`);
  links.length = 0;
  await page.goto(`${web}/#/executions/${report.id}`);
  await ready("executions");
  await page.waitForSelector(`.media[data-count="${reportMedia.length}"]`, { timeout: 20000 });
  await page.waitForTimeout(1500); // the replayed events' re-reads
  const names = await page.locator(".media figcaption a").allTextContents();
  check(names.length === reportMedia.length && new Set(names).size === names.length,
    `each media object is listed once (${names.join(", ")})`);
  check(links.length === reportMedia.length, `each media link is signed once (${links.length} for ${reportMedia.length})`);

  // The grid pages with the API's cursors.
  await page.goto(`${web}/#/grid`);
  await ready("grid");
  const rows = await page.locator("tbody tr").count();
  check(rows === 50, `the grid shows a page of 50 (${rows})`);
  const firstId = await page.locator("tbody tr td:last-child").first().textContent();
  await shot("grid");
  // Export: everything the filter matches, not only this page.
  const all = (await api("/executions?limit=1000&fields=id")).json.executions.map((e) => e.id);
  const [csv] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
  const csvRows = readFileSync(await csv.path(), "utf8").split("\r\n").filter(Boolean);
  const exportedIds = csvRows.slice(1).map((line) => line.split(",")[0]);
  check(csvRows[0].startsWith("id,") && exportedIds.length === all.length && new Set(exportedIds).size === all.length
    && all.every((id) => exportedIds.includes(id)), `Export CSV saves every execution once (${exportedIds.length} of ${all.length})`);
  await page.waitForSelector("#export-answer:has-text('Exported')");
  await page.click("#older");
  await ready("grid");
  const nextFirst = await page.locator("tbody tr td:last-child").first().textContent();
  check(nextFirst !== firstId && (await page.locator("tbody tr").count()) > 0, "Older shows the next page");
  await page.click("button:has-text('Newer')");
  await ready("grid");
  check(await page.locator("tbody tr td:last-child").first().textContent() === firstId, "Newer goes back");

  // Tasks, a task's generated form, plugins.
  await page.goto(`${web}/#/tasks`);
  await ready("tasks");
  check((await page.locator("tbody tr").count()) >= 5, "tasks are listed");
  await shot("tasks");
  const greet = (await api("/tasks/greet")).json;
  await page.goto(`${web}/#/tasks/${greet.id}`);
  await page.waitForSelector("#in-name");
  check(true, "a task with an input schema gets a form field per property");
  await page.fill("#in-name", "Form");
  await page.click("form button[type=submit]");
  await page.waitForURL(/#\/executions\//);
  const greetId = page.url().split("/executions/")[1];
  const greeted = await until("the form's execution ends", async () => {
    const e = (await api(`/executions/${greetId}`)).json;
    return e.state === "SUCCESS" ? e : null;
  });
  check(greeted.outputs.message === "Hello, Form!", "the form's input reached the action");
  await shot("task");

  const junk = join(data, "junk.wasm");
  writeFileSync(junk, "not a component");
  await page.goto(`${web}/#/plugins`);
  await ready("plugins");
  await page.fill("#p-name", "junk");
  await page.setInputFiles("#p-file", junk);
  await page.click("form button[type=submit]");
  await page.waitForSelector(".answer [role=alert]");
  const said = await page.locator(".answer").textContent();
  check(said.includes("422") && (await page.locator(".answer ul.problems li").count()) > 0, "a refused upload shows the validation problems");
  await shot("plugins");
  // A good upload's answer stays, with the table read again.
  await page.fill("#p-name", "noop-copy");
  await page.setInputFiles("#p-file", join(root, "plugins/target/wasm32-wasip2/release/noop.wasm"));
  await page.click("form button[type=submit]");
  await page.waitForSelector("table[aria-label=Plugins] td:text-is('noop-copy')", { timeout: 20000 });
  check(/(Uploaded|Already there): noop-copy/.test(await page.locator(".answer").textContent()),
    "a successful upload says so and the table lists the plugin");

  await page.goto(`${web}/#/overview`);
  await ready("overview");
  check((await page.locator("svg.chart").count()) === 4, "the overview draws its four charts");
  await shot("overview");

  // A token without a scope sees the buttons it cannot use disabled.
  const reader = (await api("/tokens", { method: "POST", json: { namespace: "default", scopes: ["executions:read", "tasks:read"] } })).json;
  await signIn(reader.secret, `#/executions/${sleep.id}`);
  await ready("executions");
  const cancel = page.locator("button:has-text('Cancel')");
  check(await cancel.isDisabled(), "Cancel is disabled for a token without executions:control");
  check((await cancel.getAttribute("title")).includes("executions:control"), "and says which scope it lacks");
  // Without media:read the media are listed, disabled, saying why: no
  // links to nowhere, no image that never loads.
  links.length = 0;
  await page.goto(`${web}/#/executions/${thumb.id}`);
  await ready("executions");
  const locked = page.locator(".media [aria-disabled=true]");
  await locked.first().waitFor({ timeout: 20000 });
  check((await locked.count()) === 1 && (await locked.getAttribute("title")) === "this token lacks the scope media:read",
    "media are disabled for a token without media:read, saying why");
  check((await page.locator(".media img, .media a").count()) === 0 && links.length === 0,
    "and no image, link or link request is made");

  // Without tasks:read the board and the grid show task ids; a view that
  // fails says why and is ready all the same.
  const bare = (await api("/tokens", { method: "POST", json: { namespace: "default", scopes: ["executions:read"] } })).json;
  await signIn(bare.secret, "#/board");
  await ready("board");
  check((await page.locator(`.card[data-id="${napId}"] a`).textContent()) === `task …${nap.id.slice(-8)}`,
    "the board opens without tasks:read, cards showing task ids");
  await page.goto(`${web}/#/grid`);
  await ready("grid");
  check((await page.locator("tbody tr").count()) === 50, "so does the grid");
  await page.goto(`${web}/#/tasks`);
  await ready("tasks");
  check((await page.locator("main [role=alert]").count()) === 1, "a view the token may not read says why, and is ready");
  await signIn(reader.secret, "#/board");
  await ready("board");

  // Keyboard: from a fresh load, Tab reaches the skip link, then the views.
  await page.goto(`${web}/#/board`);
  await page.reload();
  await ready("board");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.classList.contains("skip")), "the first tab stop skips to the content");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await ready("grid");
  check(true, "a view is opened from the keyboard");
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  check(missing.length === 0, `nothing the page asked for was missing (${missing.join(", ")})`);

  // A server run with --no-auth needs no sign-in.
  mkdirSync(join(data, "open-plugins"));
  const open = await serve(["--data-dir", join(data, "open"), "--plugins", join(data, "open-plugins"), "--no-auth"]);
  const fresh = await browser.newPage();
  fresh.on("pageerror", (e) => errors.push(String(e)));
  await fresh.goto(`${open.page}/`);
  await fresh.waitForSelector('main[data-ready="true"][data-view="board"]', { timeout: 20000 });
  check((await fresh.locator("#token").count()) === 0 && (await fresh.locator("#no-auth").count()) === 1,
    "with --no-auth the board opens without asking for a token");
  check(errors.length === 0, `still no script errors (${errors.join("; ")})`);
} finally {
  if (browser) await browser.close();
  for (const stop of stops) stop();
  rmSync(data, { recursive: true, force: true });
}
