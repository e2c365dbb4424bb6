// Opens srdeploy web pages in Debian's chromium, headless, and reports what each page shows when it is finished
// (its title begins with "done" or "error"): the title, the one-line error, the report, the output image written
// to a PNG file, a screenshot on request. Usage: node drive.mjs JOBS.json, with JOBS a list of
// {url, output?, screenshot?, timeout_ms?}; prints a JSON list of results. Browser flags: CHROMIUM_FLAGS (extra).
import { readFileSync, writeFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  protocolTimeout: 3600000,  // long pages (a 1280×720 DSRNet upscale on one thread) wait as long as the job allows
  args: ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", ...(process.env.CHROMIUM_FLAGS || "").split(" ").filter(Boolean)],
});
const results = [];
try {
  for (const job of jobs) {
    const page = await browser.newPage();
    const console_ = [];
    page.on("console", (message) => console_.push(`${message.type()}: ${message.text()}`.slice(0, 300)));
    page.on("pageerror", (error) => console_.push(`pageerror: ${error.message}`.slice(0, 300)));
    await page.setViewport({ width: 1200, height: 800 });
    const result = { url: job.url };
    try {
      await page.goto(job.url, { waitUntil: "load" });
      await page.waitForFunction(() => /^(done|error)/.test(document.title), { timeout: job.timeout_ms || 120000, polling: 100 });
    } catch (e) {
      result.driver_error = String(e.message).split("\n")[0];
    }
    Object.assign(result, await page.evaluate(() => ({
      title: document.title,
      error: document.getElementById("srdeploy-error")?.hidden === false ? document.getElementById("srdeploy-error").textContent : null,
      report: document.getElementById("srdeploy-report")?.textContent || null,
      status: document.getElementById("srdeploy-status")?.textContent || null,
      output: document.getElementById("srdeploy-output")?.getAttribute("src") || null,
      images: Object.fromEntries(["srdeploy-input", "srdeploy-output"].map((id) => {
        const img = document.getElementById(id);
        if (!img) return [id, null];
        const box = img.getBoundingClientRect();
        return [id, { natural: [img.naturalWidth, img.naturalHeight], box: [box.left, box.top, box.width, box.height] }];
      })),
    })));
    if (result.output && result.output.startsWith("data:image/png;base64,") && job.output) {
      writeFileSync(job.output, Buffer.from(result.output.slice(22), "base64"));
      result.output = job.output;
    } else if (result.output) {
      result.output = result.output.slice(0, 40);
    }
    if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
    result.console = console_;
    results.push(result);
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results));
