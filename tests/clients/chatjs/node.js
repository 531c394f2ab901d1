// ChatJS 5.0, unmodified, in Node (run with --experimental-websocket: Node 20 has its
// WebSocket behind that flag), as a customer through a whole chat against the simulator.
"use strict";

// What a browser has and Node 20 lacks, as ChatJS reads it: a window, a navigator.
globalThis.window = globalThis;
globalThis.self = globalThis;
if (typeof navigator === "undefined") {
  globalThis.navigator = { userAgent: `Node.js/${process.version}`, onLine: true };
}
require("amazon-connect-chatjs");
require("./scenario.js");
const { REGION, startChat, simKnobs, endpointFromArgs } = require("./common.js");

async function main() {
  const endpoint = endpointFromArgs();
  const chat = await startChat(endpoint, "ChatJS in Node");
  const summary = await globalThis.runCustomerChat({
    connect: globalThis.connect,
    endpoint,
    region: REGION,
    chatDetails: chat,
    sim: simKnobs(endpoint, chat.ContactId),
    log: (line) => console.log(line),
  });
  console.log(`chatjs node: ok ${JSON.stringify(summary)}`);
  // ChatJS keeps timers after the chat ends; the run is over.
  process.exit(0);
}

main().catch((err) => {
  console.error(`chatjs node: FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
