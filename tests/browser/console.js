// The gateway's chat page and debugging console in headless Chromium, as a newcomer uses
// them after `cargo run`: open the admin endpoint, start a chat, see the simulated agent
// answer with typing and receipts, follow the chat in the console, end it. The page calls
// the API over gRPC-Web on the gRPC port, another origin, so CORS is real. Fails on any
// console error or HTTP error the page meets.
//
//   node console.js http://127.0.0.1:<admin port>
"use strict";

const { chromium } = require("playwright-core");

const TIMEOUT_MS = 15000;

async function main() {
  const admin = process.argv[2];
  if (!admin) throw new Error("usage: node console.js http://host:admin-port");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const failures = [];
  const check = (ok, what) => {
    if (!ok) throw new Error(what);
    console.log(`ok - ${what}`);
  };
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on("console", (msg) => {
      if (msg.type() === "error") failures.push(`console.error: ${msg.text()}`);
    });
    page.on("pageerror", (err) => failures.push(`page error: ${err.message}`));
    page.on("response", (res) => {
      if (res.status() >= 400) failures.push(`HTTP ${res.status()}: ${res.url()}`);
    });

    await page.goto(admin);
    check(new URL(page.url()).pathname === "/console/", "the admin root opens the console");
    await page.waitForFunction(() => document.getElementById("endpoint").textContent.includes("simulator"));
    check(true, "the page names the embedded simulator");

    await page.fill("#display-name", "Ada");
    await page.click("#start button");
    await page.waitForSelector("#upstream[data-state='connected']");
    const contactId = (await page.textContent("#contact-id")).trim();
    check(contactId.length > 0, `a chat started (${contactId}) and its upstream connected`);
    await page.waitForSelector("#messages li.notice >> text=Ada joined");
    check(true, "the stream began with the chat's history: the customer's own join");

    await page.type("#compose-text", "Hello from the browser");
    await page.click("#compose button");
    await page.waitForSelector("#messages li.message.customer >> text=Hello from the browser");
    check(true, "the customer's message came back on the stream");
    await page.waitForSelector("#messages li.message.agent");
    check(true, "the simulated agent answered");
    await page.waitForSelector("#stream-log li >> text=/^typing · agent/");
    check(true, "the agent's typing arrived");
    await page.waitForSelector("#messages li.message.customer .receipt >> text=read");
    check(true, "the agent's read receipt marked the message read");
    await page.waitForSelector("#stream-log li >> text=/^read · customer/");
    check(true, "the page sent its own read receipt for the agent's message");

    // The console: the chat is listed; selecting it shows its events, without content.
    const row = `#chats tr[data-chat-id="${contactId}"]`;
    await page.waitForSelector(`${row} >> text=connected`);
    check((await page.textContent(`${row} td:nth-child(5)`)) === "1", "the console lists the chat with its one subscriber");
    await page.click(row);
    await page.waitForSelector("#events tr >> text=message");
    const events = await page.textContent("#events");
    check(events.includes("customer") && events.includes("agent"), "the console shows the chat's messages by sender");
    check(!events.includes("Hello from the browser"), "the console shows no message content");

    await page.click("#end");
    await page.waitForSelector("#messages li.notice >> text=chat ended");
    await page.waitForSelector("#upstream[data-state='ended']");
    check(await page.isDisabled("#compose button"), "ending the chat ends the stream and the composer");
  } finally {
    await browser.close();
  }
  if (failures.length > 0) {
    throw new Error(`the page met errors:\n${failures.join("\n")}`);
  }
}

main().catch((err) => {
  console.error(`not ok - ${err.stack || err}`);
  process.exit(1);
});
