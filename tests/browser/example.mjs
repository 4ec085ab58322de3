// docs/client.md's example, as written: its two code blocks are served next to sipline
// (same origin, under sipline's own Content-Security-Policy), then used like a person:
// it registers, calls CALLEE (a far end that answers and waits for BYE), hangs up.
//
// env: SIPLINE_URL, CALLEE (default 1001)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../docs/client.md");

/** The fenced code blocks of the doc whose first line names `file` (`<!-- index.html -->`, `// phone.js`). */
function block(markdown, file) {
  for (const m of markdown.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) {
    const first = m[1].split("\n")[0].trim();
    if (first === `<!-- ${file} -->` || first === `// ${file}`) return m[1];
  }
  throw new Error(`docs/client.md has no code block for ${file}`);
}

t.scenario("example", async (ctx) => {
  const doc = fs.readFileSync(DOC, "utf8");
  const html = block(doc, "index.html");
  const js = block(doc, "phone.js");
  t.check("the example is about 30 lines", js.trim().split("\n").length <= 30, `${js.trim().split("\n").length} lines of JS`);

  // sipline's own headers for its pages, so the example runs under the same CSP
  const head = await fetch(t.SIPLINE_URL);
  const csp = head.headers.get("content-security-policy") ?? "";
  t.check("sipline serves a CSP", csp.includes("script-src 'self'"), csp);

  const browser = await t.launch(ctx);
  const base = new URL("example/", t.SIPLINE_URL).href;
  const serveExample = (context) => context.route(`${base}*`, (route) => {
    const file = new URL(route.request().url()).pathname.split("/").pop();
    const [body, type] = file === "phone.js" ? [js, "text/javascript"] : [html, "text/html; charset=utf-8"];
    return route.fulfill({ status: 200, body, headers: { "content-type": type, "content-security-policy": csp } });
  });
  // a document Playwright fulfils has no address space of its own: Chromium's Local
  // Network Access checks then block its WebSocket to 127.0.0.1 unless permitted
  const rec = await t.open(browser, `${base}index.html`, { setup: serveExample, permissions: ["local-network-access"] });
  const { page } = rec;
  page.on("dialog", (d) => d.accept());

  await t.expectText(page, "the example registers", "#status", /^Ready: your number is 88\d$/);
  await page.locator("#number").fill(CALLEE);
  await page.locator("#call").click();
  await t.expectText(page, "the example's call is answered", "#status", /^Call: inCall$/, 15000);
  await page.waitForTimeout(500);
  await page.locator("#hangup").click();
  await t.expectText(page, "the example hangs up", "#status", /^Call: completed$/);
  t.check("it used sipline.js from sipline", t.requests(rec, "call").length === 1);
  t.checkClean(rec);
});
