// Drives Debian's Chromium (playwright-core, the system executable: nothing
// downloads a browser) through the link page for the end-to-end test in
// crates/coffer-cli/tests/browser.rs, which starts the server, makes the
// links and tampers with the stored objects. This script only plays the
// customer: it opens each URL, types the password (or chooses the files to
// send, reloading the page mid-way when asked), waits for the page's verdict
// and reports what the browser saved or sent.
//
//   node test/browser.mjs SPEC.json > RESULTS.json
//
// SPEC: {chromium, spki, artifacts, cases: [{label, url, password?, trusted}
//        | {label, kind: "request", url, trusted, files, senderName?, reloadAfterBytes?}]}
// `trusted` cases run in a browser that trusts the server's certificate (as a
// CA-signed one would be: --ignore-certificate-errors-spki-list pins it);
// the others click through a self-signed certificate, as a customer would.
// RESULTS: [{label, state, error, download: {sha256, bytes} | {failure},
//            heapPeakBytes, mode, text}
//           | {label, state, error, resumed, receipts, fingerprint, text, heapPeakBytes}]

import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(spec.artifacts, { recursive: true });
const browsers = {};

/**
 * One browser per kind of trust: `true` trusts the test server's self-signed
 * certificate by its key (a pin), `false` trusts nothing extra, `"ca"` runs
 * with a HOME whose NSS store (where Chromium on Linux keeps a user's CAs)
 * trusts the test CA.
 */
async function browserFor(trusted) {
  const key = trusted === "ca" ? "ca" : trusted ? "trusted" : "self-signed";
  browsers[key] ??= await chromium.launch({
    executablePath: spec.chromium,
    args: trusted === true ? [`--ignore-certificate-errors-spki-list=${spec.spki}`] : [],
    env: trusted === "ca" ? { ...process.env, HOME: spec.caHome } : process.env,
  });
  return browsers[key];
}

function sha256(path) {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    let bytes = 0;
    createReadStream(path)
      .on("data", (d) => {
        hash.update(d);
        bytes += d.length;
      })
      .on("end", () => resolve({ sha256: hash.digest("hex"), bytes }))
      .on("error", reject);
  });
}

/** An upload-link case: choose files, send, maybe reload mid-way and choose them again. */
async function sendFiles(page, test, shot) {
  let wrongPasswordSeen = false;
  for (const attempt of test.passwords ?? []) {
    await page.waitForFunction(() => ["password", "ready", "error"].includes(document.body.dataset.state));
    if ((await page.evaluate(() => document.body.dataset.state)) !== "password") break;
    await page.evaluate(() => delete document.body.dataset.error);
    await page.fill("#password", attempt);
    await page.click("#password-button");
    await page.waitForFunction(
      () => document.body.dataset.state !== "password" || document.body.dataset.error === "wrong_password",
      null,
      { timeout: 60_000 },
    );
    if ((await page.evaluate(() => document.body.dataset.error)) === "wrong_password") {
      wrongPasswordSeen = true;
      await shot("wrong-password");
    }
  }
  const choose = async () => {
    await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state));
    if ((await page.evaluate(() => document.body.dataset.state)) === "error") return false;
    if (test.senderName) await page.fill("#sender-name", test.senderName);
    await page.setInputFiles("#files", test.files);
    await page.click("#send-button");
    return true;
  };
  if (await choose() && test.reloadAfterBytes) {
    await page.waitForFunction((n) => Number(document.body.dataset.sent ?? 0) >= n, test.reloadAfterBytes, { timeout: 300_000 });
    // Reload at once: a screenshot first can take seconds on a loaded
    // machine, and the upload once finished before the reload came.
    await page.reload();
    await choose();
    await page.waitForFunction(() => document.body.dataset.sent !== undefined || ["done", "error"].includes(document.body.dataset.state));
    await shot("sending-resumed");
  }
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, { timeout: 600_000 });
  const seen = await page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.body.dataset.error ?? null,
    resumed: Number(document.body.dataset.resumed ?? 0),
    receipts: document.getElementById("receipts").textContent,
    fingerprint: document.getElementById("fingerprint").textContent,
    text: document.getElementById(document.body.dataset.state === "error" ? "error-text" : "done-text").textContent,
  }));
  return { ...seen, wrongPasswordSeen };
}

async function run(test) {
  const browser = await browserFor(test.trusted);
  const context = await browser.newContext({ acceptDownloads: true, ignoreHTTPSErrors: !test.trusted });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  let heapPeakBytes = 0;
  const sampler = setInterval(async () => {
    try {
      const { metrics } = await cdp.send("Performance.getMetrics");
      const used = metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0;
      heapPeakBytes = Math.max(heapPeakBytes, used);
    } catch {
      /* the page is closing */
    }
  }, 200);
  const downloads = [];
  page.on("download", (d) => downloads.push(d));
  page.on("crash", () => console.error(`[${test.label}] page crashed`));
  page.on("framenavigated", (f) => console.error(`[${test.label}] navigated: ${f.url()} main=${f === page.mainFrame()}`));
  context.on("page", (p) => console.error(`[${test.label}] new page ${p.url()}`));
  page.on("close", () => console.error(`[${test.label}] page closed`));
  page.on("requestfailed", (r) => console.error(`[${test.label}] request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("pageerror", (e) => console.error(`[${test.label}] page error: ${e.message}`));
  page.on("console", (m) => console.error(`[${test.label}] console: ${m.text()}`));
  const shot = (state) => page.screenshot({ path: join(spec.artifacts, `${test.label}-${state}.png`), fullPage: true });
  try {
    if (test.uploadBytesPerSecond) {
      // Slow the upload so that a reload lands mid-way however fast or
      // loaded the machine is (a fast run once finished before it).
      await cdp.send("Network.enable");
      await cdp.send("Network.emulateNetworkConditions", {
        offline: false,
        latency: 0,
        downloadThroughput: -1,
        uploadThroughput: test.uploadBytesPerSecond,
      });
    }
    await page.goto(test.url);
    if (test.kind === "request") {
      const result = await sendFiles(page, test, shot);
      await shot(result.state);
      return { label: test.label, ...result, heapPeakBytes };
    }
    await page.waitForFunction(() => ["password", "ready", "error"].includes(document.body.dataset.state));
    await shot(await page.evaluate(() => document.body.dataset.state));
    for (const attempt of test.passwords ?? (test.password ? [test.password] : [])) {
      await page.waitForFunction(() => ["password", "error"].includes(document.body.dataset.state));
      if ((await page.evaluate(() => document.body.dataset.state)) === "error") break;
      await page.fill("#password", attempt);
      await page.click("#password-form button");
      await page.waitForFunction(
        () => ["password", "done", "error"].includes(document.body.dataset.state) && document.body.dataset.state !== "opening",
        null,
        { timeout: 60_000 },
      );
      // A wrong password returns to the form with a message.
      await page.waitForFunction(() => document.body.dataset.state !== "opening", null, { timeout: 60_000 });
    }
    if ((await page.evaluate(() => document.body.dataset.state)) === "ready") await page.click("#open-button");
    await page.waitForFunction(() => ["done", "error", "password"].includes(document.body.dataset.state), null, {
      timeout: 600_000,
    });
    const result = await page.evaluate(() => ({
      state: document.body.dataset.state,
      error: document.body.dataset.error ?? null,
      mode: document.getElementById("mode").textContent,
      text: (document.getElementById(document.body.dataset.state === "error" ? "error-text" : "done-text")?.textContent ?? "") +
        (document.getElementById("password-error").textContent ?? ""),
      name: document.getElementById("name").textContent,
      resumedFrom: document.body.dataset.resumedFrom ?? null,
    }));
    await shot(result.state);
    // Give a stream that just failed time to be marked failed.
    await page.waitForTimeout(500);
    let download = null;
    if (downloads.length) {
      const failure = await downloads[0].failure();
      download = failure ? { failure } : await sha256(await downloads[0].path());
      download.suggested = downloads[0].suggestedFilename();
    }
    return { label: test.label, ...result, download, downloads: downloads.length, heapPeakBytes };
  } catch (err) {
    await shot("stuck").catch(() => {});
    return { label: test.label, state: "stuck", error: String(err), heapPeakBytes };
  } finally {
    clearInterval(sampler);
    await context.close().catch(() => {});
  }
}

const results = [];
for (const test of spec.cases) results.push(await run(test));
for (const browser of Object.values(browsers)) await browser.close();
process.stdout.write(JSON.stringify(results, null, 1));
