// ChatJS 5.0, unmodified, in headless Chromium: a page served from another origin than the
// simulator (so every participant call is a real cross-origin request with its CORS
// preflight) runs the same customer chat as the Node suite. Fails on any console error,
// CORS ones included.
"use strict";

const http = require("http");
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");
const { REGION, startChat, simKnobs, endpointFromArgs } = require("./common.js");

const FILES = {
  "/": ["text/html", () => PAGE],
  "/chatjs.js": ["text/javascript", () => fs.readFileSync(require.resolve("amazon-connect-chatjs"))],
  "/scenario.js": ["text/javascript", () => fs.readFileSync(path.join(__dirname, "scenario.js"))],
};
const PAGE = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>ChatJS against the simulator</title><link rel="icon" href="data:,">
<script src="/chatjs.js"></script><script src="/scenario.js"></script></head><body>chat</body></html>`;

function serve() {
  const server = http.createServer((req, res) => {
    const file = FILES[req.url];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[0] }).end(file[1]());
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function main() {
  const endpoint = endpointFromArgs();
  const server = await serve();
  // The page's origin is localhost, the simulator's 127.0.0.1: two origins.
  const origin = `http://localhost:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const failures = [];
  try {
    const page = await browser.newPage();
    page.on("console", (msg) => {
      const line = `console.${msg.type()}: ${msg.text()}`;
      if (msg.type() === "error") failures.push(line);
      else console.log(line);
    });
    page.on("pageerror", (err) => failures.push(`page error: ${err.message}`));
    page.on("response", (res) => {
      if (res.status() >= 400) failures.push(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
    });
    page.on("requestfailed", async (req) => {
      // ChatJS never reads the body of the upload's answer; the browser then reports the
      // answered request as aborted. Only requests that got no answer are failures.
      const answered = await req.response().catch(() => null);
      if (!(answered && answered.ok() && req.failure().errorText === "net::ERR_ABORTED")) {
        failures.push(`request failed: ${req.method()} ${req.url()} ${req.failure().errorText}`);
      }
    });
    const chat = await startChat(endpoint, "ChatJS in Chromium");
    const knobs = simKnobs(endpoint, chat.ContactId);
    await page.exposeFunction("simDropSockets", knobs.dropSockets);
    await page.exposeFunction("simSay", knobs.say);
    await page.exposeFunction("simAnswerDelay", knobs.answerDelay);
    await page.goto(origin + "/");
    const summary = await page.evaluate(
      (args) =>
        window.runCustomerChat({
          ...args,
          connect: window.connect,
          sim: { dropSockets: window.simDropSockets, say: window.simSay, answerDelay: window.simAnswerDelay },
          log: (line) => console.log(line),
        }),
      { endpoint, region: REGION, chatDetails: chat }
    );
    if (failures.length) throw new Error(`the browser reported:\n${failures.join("\n")}`);
    console.log(`chatjs browser (page ${origin}, simulator ${endpoint}): ok ${JSON.stringify(summary)}`);
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch((err) => {
  console.error(`chatjs browser: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
