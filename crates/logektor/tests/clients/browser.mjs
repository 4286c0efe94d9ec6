// Drives headless Chromium (Debian's, through playwright-core) against a test site on another
// localhost port that embeds Logektor's /t.js: page views on load and on single-page-app
// navigation, a custom event on click, a pixel <img>, and a sendBeacon when a page is closed.
// Usage: node browser.mjs LOGEKTOR_BASE WRITE_KEY RUN_ID — prints {"anonymousId": ...} as JSON.
import http from "node:http";
import { chromium } from "playwright-core";

const [base, key, run] = process.argv.slice(2);
const tracker = `<script defer src="${base}/t.js" data-write-key="${key}"></script>`;
const pages = {
  "/": `<!doctype html><title>Home ${run}</title>${tracker}
    <button id="pricing" onclick="document.title='Pricing ${run}'; history.pushState({}, '', '/pricing')">Pricing</button>
    <button id="buy" onclick="logektor('track', 'Buy Clicked ${run}', {plan: 'pro'})">Buy</button>`,
  "/pixel": `<!doctype html><title>Pixel</title>
    <img id="px" src="${base}/pixel/v1/track?writeKey=${key}&event=Pixel%20Viewed%20${run}&anonymousId=px-${run}&properties.campaign=mail">`,
  "/leave": `<!doctype html><title>Leave ${run}</title>${tracker}
    <button id="later" onclick="logektor('track', 'Left Page ${run}')">Later</button>`,
};
const site = http.createServer((req, res) => {
  const body = pages[new URL(req.url, "http://x").pathname] ?? pages["/"];
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(body);
});
await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${site.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const problems = [];
const context = await browser.newContext();
const page = await context.newPage();
page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
// A navigation cuts off the reading of responses still open (keepalive fetches whose 200 has
// arrived, beacons), and Chromium reports those as net::ERR_ABORTED; whether every event really
// arrived is checked server-side by the Rust test. Any other network failure is a problem.
page.on("requestfailed", (req) => {
  const error = req.failure()?.errorText ?? "";
  if (error !== "net::ERR_ABORTED") problems.push(`request failed: ${req.url()} ${error}`);
});
const batchAccepted = () =>
  page.waitForResponse((r) => r.url() === `${base}/v1/batch` && r.status() === 200, { timeout: 15000 });

// Load: one page view.
let sent = batchAccepted();
await page.goto(`${origin}/`);
await sent;
// Single-page navigation: a page view for /pricing.
sent = batchAccepted();
await page.click("#pricing");
await sent;
// A custom event (queued for up to a second), then back: the popstate page view sends both.
await page.click("#buy");
sent = batchAccepted();
await page.goBack();
await sent;
const anonymousId = await page.evaluate(() => localStorage.getItem("lgk_aid"));

// A pixel.
const pixel = page.waitForResponse((r) => r.url().startsWith(`${base}/pixel/v1/track`), { timeout: 15000 });
await page.goto(`${origin}/pixel`);
const pixelResponse = await pixel;
if (pixelResponse.status() !== 200 || pixelResponse.headers()["content-type"] !== "image/gif") {
  problems.push(`pixel answered ${pixelResponse.status()} ${pixelResponse.headers()["content-type"]}`);
}

// A queued event leaves with sendBeacon when the page is closed.
sent = batchAccepted();
await page.goto(`${origin}/leave`);
await sent;
await page.click("#later");
await page.close({ runBeforeUnload: true });
// Give the beacon time to leave before the browser goes away.
await new Promise((resolve) => setTimeout(resolve, 1500));

await browser.close();
site.close();
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ anonymousId, origin }));
