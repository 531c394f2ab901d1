// What a customer's backend and a test driver do around ChatJS: StartChatContact (a server
// call, unsigned against the simulator) and the simulator's admin knobs.
"use strict";

const REGION = "us-east-1";

async function call(url, method, body) {
  const res = await fetch(url, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: HTTP ${res.status} ${text}`);
  return text ? JSON.parse(text) : {};
}

function startChat(endpoint, name) {
  return call(`${endpoint}/contact/chat`, "PUT", {
    InstanceId: "chatjs-suite",
    ContactFlowId: "chatjs-flow",
    ParticipantDetails: { DisplayName: name },
  });
}

function simKnobs(endpoint, contactId) {
  return {
    dropSockets: async () => (await call(`${endpoint}/_sim/sockets/drop`, "POST", { contact_id: contactId })).dropped,
    say: async (text) => (await call(`${endpoint}/_sim/chats/${contactId}/say`, "POST", { text })).id,
    answerDelay: (millis) => call(`${endpoint}/_sim/answer-delay`, "POST", { millis }),
  };
}

function endpointFromArgs() {
  const endpoint = process.argv[2] || process.env.CONNECT_SIM_ENDPOINT;
  if (!endpoint) {
    console.error(`usage: node ${process.argv[1]} <simulator endpoint, e.g. http://127.0.0.1:8787>`);
    process.exit(2);
  }
  return endpoint.replace(/\/$/, "");
}

module.exports = { REGION, startChat, simKnobs, endpointFromArgs };
