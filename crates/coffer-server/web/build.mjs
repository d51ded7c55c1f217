// Builds the browser pages into dist/, which the server embeds
// (crates/coffer-server/src/http/pages.rs). `node build.mjs --check` rebuilds
// into a scratch directory and fails if dist/ differs, so the committed
// bundle is always the one these sources and package-lock.json produce.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const check = process.argv.includes("--check");
const here = new URL(".", import.meta.url).pathname;
const out = check ? mkdtempSync(join(tmpdir(), "coffer-web-")) : join(here, "dist");
mkdirSync(out, { recursive: true });

const entries = { link: "src/link-page.js", request: "src/request-page.js", sw: "src/sw.js" };
for (const [name, entry] of Object.entries(entries)) {
  await build({
    entryPoints: [join(here, entry)],
    outfile: join(out, `${name}.js`),
    bundle: true,
    format: "iife",
    target: ["chrome120", "firefox120", "safari17"],
    minify: true,
    legalComments: "eof",
    logLevel: "warning",
  });
}
for (const page of readdirSync(join(here, "pages"))) copyFileSync(join(here, "pages", page), join(out, page));

if (check) {
  const dist = join(here, "dist");
  const stale = readdirSync(out).filter((f) => !readFileSync(join(out, f)).equals(readFileSync(join(dist, f))));
  if (stale.length) {
    console.error(`dist/ is stale (${stale.join(", ")}): run \`npm run build\` in crates/coffer-server/web and commit dist/`);
    process.exit(1);
  }
  console.log("dist/ matches the sources");
}
