// How long each view of the web page takes to load with many executions
// stored (a benchmark, not a test: see BENCHMARKS.md). Starts `ward serve`
// on a temporary data dir, triggers EXECUTIONS (default 100,000) runs of
// the `noop` example, then opens each view in headless Chromium ROUNDS
// times (default 5) and prints the median and worst time from navigation
// to the view's `data-ready`, and the same for a plain reload.
//
// node tests/web/load.mjs   (WARD_BIN, CHROMIUM, EXECUTIONS, ROUNDS)
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const root = resolve(new URL("../..", import.meta.url).pathname);
const bin = process.env.WARD_BIN || join(root, "target/release/ward");
const total = Number(process.env.EXECUTIONS || 100000);
const rounds = Number(process.env.ROUNDS || 5);
const data = mkdtempSync(join(tmpdir(), "ward-load-"));

const server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", data,
  "--plugins", join(root, "plugins/target/wasm32-wasip2/release")], { stdio: ["ignore", "pipe", "ignore"] });
const base = await new Promise((res) => {
  createInterface({ input: server.stdout }).on("line", (line) => {
    const m = line.match(/^Ward is serving on (http:\/\/\S+)/);
    if (m) res(m[1]);
  });
});
const token = readFileSync(join(data, "admin.token"), "utf8").trim();
const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
const post = (path, body) => fetch(`${base}/api/v1${path}`, { method: "POST", headers, body: JSON.stringify(body) });

await post("/tasks", { name: "n", action: "noop" });
const began = Date.now();
let made = 0;
async function worker() {
  while (made < total) {
    made++;
    const r = await post("/tasks/n/executions", {});
    if (r.status !== 201) throw new Error(`trigger: ${r.status}`);
    await r.arrayBuffer();
  }
}
await Promise.all(Array.from({ length: 64 }, worker));
console.log(`${total} executions triggered in ${((Date.now() - began) / 1000).toFixed(1)} s`);
// Let them finish.
for (;;) {
  const r = await fetch(`${base}/api/v1/executions?status=pending,running&limit=1&fields=id`, { headers });
  if ((await r.json()).executions.length === 0) break;
  await new Promise((res) => setTimeout(res, 500));
}
const task = (await (await fetch(`${base}/api/v1/tasks/n`, { headers })).json()).id;
const anExecution = (await (await fetch(`${base}/api/v1/executions?limit=1&fields=id`, { headers })).json()).executions[0].id;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
await page.goto(`${base}/`);
await page.fill("#token", token);
await page.click("button[type=submit]");
await page.waitForSelector('main[data-ready="true"]');
const views = [["board", "#/board"], ["grid", "#/grid"], ["executions", `#/executions/${anExecution}`],
  ["tasks", "#/tasks"], ["tasks", `#/tasks/${task}`], ["plugins", "#/plugins"], ["overview", "#/overview"]];
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log("view                                   median ms   worst ms   (navigation → data-ready)");
for (const [view, hash] of views) {
  const times = [];
  for (let i = 0; i < rounds; i++) {
    await page.goto(`${base}/#/nowhere`);
    await page.waitForSelector('main[data-ready="true"]');
    const t0 = Date.now();
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForSelector(`main[data-ready="true"][data-view="${view}"]`);
    times.push(Date.now() - t0);
  }
  console.log(`${hash.padEnd(40)} ${String(median(times)).padStart(6)}   ${String(Math.max(...times)).padStart(8)}`);
}
await browser.close();
server.kill("SIGTERM");
if (process.env.KEEP) console.log(`data kept in ${data}`);
else rmSync(data, { recursive: true, force: true });
