// Drives the dashboard in headless Chromium: sign in with the read token, open a date range,
// change it, and check the numbers change; no console errors; screenshots at laptop and phone
// width into OUT_DIR.
// Usage: node dashboard.mjs BASE READ_TOKEN OUT_DIR — prints {"before": .., "after": ..}.
import { chromium } from "playwright-core";

const [base, token, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const problems = [];
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));

await page.goto(`${base}/`);
await page.fill("input[name=token]", token);
await Promise.all([page.waitForURL(`${base}/`), page.click("button[type=submit]")]);

const visitors = () => page.textContent("[data-metric=visitors] .value");
await page.goto(`${base}/?from=2024-04-01&to=2024-05-06&interval=week`);
const before = (await visitors()).trim();
for (const title of ["Overview", "Visitors and page views", "Top pages", "Entry pages", "Referrers",
                     "Campaigns (UTM)", "Devices", "Events per week", "Funnel", "Retention (weekly cohorts)"]) {
  if (!(await page.isVisible(`h2:text-is("${title}")`))) problems.push(`missing panel ${title}`);
}
if ((await page.locator(".chart svg").count()) < 2) problems.push("charts missing");
await page.screenshot({ path: `${out}/dashboard-laptop.png`, fullPage: true });

// Change the range with the pickers: one week only.
await page.fill("input[name=from]", "2024-04-08");
await page.fill("input[name=to]", "2024-04-15");
await Promise.all([page.waitForLoadState("load"), page.click("form.filters button[type=submit]")]);
await page.waitForURL(/from=2024-04-08/);
const after = (await visitors()).trim();

await page.setViewportSize({ width: 390, height: 844 });
await page.goto(`${base}/?from=2024-04-01&to=2024-05-06`);
const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
if (overflow > 2) problems.push(`page is ${overflow}px wider than a phone`);
await page.screenshot({ path: `${out}/dashboard-phone.png`, fullPage: true });

await browser.close();
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ before, after }));
