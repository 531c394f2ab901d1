// The chat page and debugging console. The chat side is an ordinary client of the public
// API (chatgateway.v1 over gRPC-Web); the console side reads the admin endpoint's JSON.
import { Client, GrpcError, Writer, msg, num, str } from "./grpc-web.js";

const SERVICE = "chatgateway.v1.ChatGateway";
const ROLES = ["", "agent", "customer", "system", "custom_bot", "supervisor"];
const UPSTREAM = ["unknown", "connected", "reconnecting"];
const EVENT_TYPE = { typing: 1, delivered: 2, read: 3 };
// The oneof fields of ChatEvent, by field number.
const KINDS = {
  10: "message", 11: "typing", 12: "participant_joined", 13: "participant_left",
  14: "participant_idle", 15: "participant_returned", 16: "delivered", 17: "read",
  18: "attachment", 19: "transfer", 20: "chat_ended", 21: "raw", 22: "upstream",
  23: "started", 24: "keepalive", 25: "participant_invited", 26: "participant_active",
  27: "participant_inactive", 28: "participant_auto_disconnected", 29: "display_name_updated",
  30: "chat_rehydrated", 31: "workflow_cancelled", 32: "authentication", 33: "message_processing",
};
const TYPING_EVERY_MS = 5000;
const TYPING_SHOWN_MS = 4000;
const REFRESH_MS = 2000;

const $ = (id) => document.getElementById(id);

function decodeEvent(f) {
  const sender = msg(f, 4);
  const time = msg(f, 3);
  const event = {
    cursor: str(f, 1),
    itemId: str(f, 2),
    time: time ? new Date(num(time, 1) * 1000 + Math.floor(num(time, 2) / 1e6)) : null,
    role: sender ? ROLES[num(sender, 3)] ?? "" : "",
    senderName: sender ? str(sender, 2) : "",
    kind: "unknown",
  };
  for (const [field, kind] of Object.entries(KINDS)) {
    const body = msg(f, Number(field));
    if (!body) continue;
    event.kind = kind;
    if (kind === "message") {
      event.contentType = str(body, 1);
      event.content = str(body, 2);
    } else if (kind === "delivered" || kind === "read") {
      event.messageId = str(body, 1);
    } else if (kind === "attachment") {
      event.attachmentId = str(body, 1);
      event.name = str(body, 2);
      event.status = str(body, 4);
    } else if (kind === "upstream" || kind === "started") {
      event.upstream = UPSTREAM[num(body, 1)] ?? "unknown";
    }
    break;
  }
  return event;
}

// One chat of the page's own: started here, held by its chat token (in memory only).
class Chat {
  constructor(client, contactId, chatToken) {
    this.client = client;
    this.contactId = contactId;
    this.chatToken = chatToken;
    this.seen = new Set();
    this.cursor = "";
    this.ended = false;
    this.lastTyping = 0;
    this.abort = new AbortController();
  }

  ref() {
    return new Writer().string(1, this.contactId).string(2, this.chatToken);
  }

  async send(content) {
    const req = new Writer().message(1, this.ref()).string(2, content).finish();
    const res = await this.client.unary(`${SERVICE}/SendMessage`, req);
    return str(res, 1);
  }

  async event(type, messageId = "") {
    const req = new Writer()
      .message(1, this.ref())
      .uint(2, EVENT_TYPE[type])
      .string(3, messageId)
      .finish();
    await this.client.unary(`${SERVICE}/SendEvent`, req);
  }

  async typing() {
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) return;
    this.lastTyping = now;
    await this.event("typing");
  }

  // A signed URL of an attachment (GetAttachment with url_only: one message).
  async attachmentUrl(attachmentId) {
    const req = new Writer()
      .message(1, this.ref())
      .string(2, attachmentId)
      .uint(3, 1)
      .finish();
    for await (const f of this.client.stream(`${SERVICE}/GetAttachment`, req)) return str(f, 3);
    throw new Error("GetAttachment answered nothing");
  }

  async end() {
    const req = new Writer().message(1, this.ref()).finish();
    await this.client.unary(`${SERVICE}/EndChat`, req);
  }

  // Subscribes until the chat ends, resuming from the last cursor when the stream breaks.
  async follow(onEvent, onState) {
    while (!this.ended && !this.abort.signal.aborted) {
      // The first stream starts with the history (from_start), later ones resume.
      const req = new Writer()
        .message(1, this.ref())
        .string(2, this.cursor)
        .uint(5, this.cursor ? 0 : 1)
        .finish();
      try {
        for await (const f of this.client.stream(
          `${SERVICE}/Subscribe`,
          req,
          this.abort.signal,
        )) {
          const e = decodeEvent(f);
          if (e.cursor) this.cursor = e.cursor;
          if (e.itemId && e.kind !== "upstream") {
            if (this.seen.has(e.itemId + e.kind)) continue;
            this.seen.add(e.itemId + e.kind);
          }
          if (e.kind === "chat_ended") this.ended = true;
          onEvent(e);
        }
        // The stream ends with OK once the chat ended.
        this.ended = true;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        const retry = err instanceof GrpcError && err.code === 14;
        onState(retry ? "reconnecting" : `stream ended: ${err.message}`);
        if (!retry) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    onState("ended");
  }
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

// A table cell; long ids and cursors are cut, with the whole value as the cell's title.
function cell(value) {
  const long = value.length > 24;
  return el("td", long ? { class: "id", title: value } : {}, value);
}

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof TypeError
    ? `${err.message}: the gRPC port did not answer this page (is this page's origin in ` +
      "--cors-allowed-origins?)"
    : err.message;
  box.hidden = false;
}

async function main() {
  const config = await (await fetch("api/config")).json();
  const base = `${config.grpc_tls ? "https" : "http"}://${location.hostname}:${config.grpc_port}`;
  $("endpoint").textContent = base + (config.simulated ? " (embedded Connect simulator)" : "");
  if (config.replica_id) $("replica").textContent = `replica ${config.replica_id}`;
  let chat = null;
  const messages = $("messages");
  let typingTimer = null;

  const credentials = () => {
    const c = $("credential").value.trim();
    if (!c) return {};
    return c.includes(".") ? { authorization: `Bearer ${c}` } : { "x-api-key": c };
  };

  const setUpstream = (state) => {
    $("upstream").textContent = state;
    $("upstream").dataset.state = state;
  };

  const onEvent = (e) => {
    const log = el("li", {}, `${e.kind}${e.role ? " · " + e.role : ""}${e.itemId ? " · " + e.itemId : ""}`);
    $("stream-log").prepend(log);
    switch (e.kind) {
      case "started":
      case "upstream":
        setUpstream(e.upstream);
        break;
      case "message": {
        if (e.role === "agent" || e.role === "system") $("agent-typing").hidden = true;
        const li = el("li", { class: `message ${e.role}`, "data-item-id": e.itemId });
        li.append(el("span", { class: "who" }, e.senderName || e.role));
        li.append(el("span", { class: "text" }, e.content));
        if (e.role === "customer") li.append(el("span", { class: "receipt" }, "sent"));
        messages.append(li);
        li.scrollIntoView({ block: "end" });
        if (e.role !== "customer") {
          chat.event("delivered", e.itemId)
            .then(() => document.visibilityState === "visible" && chat.event("read", e.itemId))
            .catch(showError);
        }
        break;
      }
      case "typing":
        if (e.role !== "customer") {
          $("agent-typing").hidden = false;
          clearTimeout(typingTimer);
          typingTimer = setTimeout(() => ($("agent-typing").hidden = true), TYPING_SHOWN_MS);
        }
        break;
      case "delivered":
      case "read": {
        if (e.role === "customer") break;
        const mark = messages.querySelector(`li[data-item-id="${CSS.escape(e.messageId)}"] .receipt`);
        if (mark && !(mark.textContent === "read" && e.kind === "delivered")) mark.textContent = e.kind;
        break;
      }
      case "participant_joined":
      case "participant_left":
        messages.append(el("li", { class: "notice" }, `${e.senderName || e.role} ${e.kind === "participant_joined" ? "joined" : "left"}`));
        break;
      case "attachment": {
        const li = el("li", { class: "notice attachment" }, `attachment ${e.name}: ${e.status.toLowerCase()} `);
        if (e.status === "APPROVED") {
          const open = el("button", { type: "button", class: "link" }, "open");
          open.addEventListener("click", () =>
            chat.attachmentUrl(e.attachmentId).then((url) => window.open(url, "_blank", "noopener")).catch(showError));
          li.append(open);
        }
        messages.append(li);
        break;
      }
      case "chat_ended":
        messages.append(el("li", { class: "notice" }, "chat ended"));
        break;
      default:
        break;
    }
  };

  $("start").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("error").hidden = true;
    try {
      const client = new Client(base, credentials());
      const req = new Writer().string(1, $("display-name").value.trim()).finish();
      const res = await client.unary(`${SERVICE}/StartChat`, req);
      chat?.abort.abort();
      chat = new Chat(client, str(res, 1), str(res, 3));
      messages.replaceChildren();
      $("stream-log").replaceChildren();
      $("contact-id").textContent = chat.contactId;
      $("chat").hidden = false;
      $("compose-text").focus();
      chat.follow(onEvent, (state) => {
        setUpstream(state);
        if (state === "ended") $("compose").querySelector("button").disabled = true;
      });
    } catch (err) {
      showError(err);
    }
  });

  $("compose").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("compose-text").value;
    if (!chat || !text.trim()) return;
    try {
      await chat.send(text);
      $("compose-text").value = "";
    } catch (err) {
      showError(err);
    }
  });
  $("compose-text").addEventListener("input", () => chat?.typing().catch(showError));
  $("end").addEventListener("click", () => chat?.end().catch(showError));

  // The console: this process's live chats, and the selected chat's recent events.
  let selected = null;
  const refresh = async () => {
    try {
      const list = await (await fetch("api/chats")).json();
      $("live-count").textContent = String(list.live);
      const rows = list.chats.map((c) => {
        const tr = el("tr", { "data-chat-id": c.id });
        for (const v of [
          c.role === "customer" ? c.contact_id : `${c.contact_id} (bot)`, c.caller, new Date(c.started_at).toLocaleTimeString(), c.upstream,
          String(c.subscribers),
          c.owns_socket === null ? "this process" : c.owns_socket ? "this replica" : "another replica",
        ]) tr.append(cell(v));
        tr.addEventListener("click", () => {
          selected = c.id;
          refresh();
        });
        if (c.id === selected) tr.classList.add("selected");
        return tr;
      });
      $("chats").replaceChildren(...rows);
      if (selected) {
        const r = await fetch(`api/chats/${encodeURIComponent(selected)}`);
        if (r.ok) {
          const d = await r.json();
          $("detail-title").textContent = `${d.contact_id} · upstream ${d.upstream} · last cursor ${d.last_cursor ?? "none"}`;
          $("events").replaceChildren(...d.events.reverse().map((e) => {
            const tr = el("tr");
            for (const v of [
              e.time ? new Date(e.time).toLocaleTimeString() : "", e.kind, e.sender_role ?? "",
              e.detail ?? "", e.item_id, e.cursor,
            ]) tr.append(cell(v));
            return tr;
          }));
        } else {
          $("detail-title").textContent = `${selected}: no longer live in this process`;
        }
        $("detail").hidden = false;
      }
    } catch (err) {
      showError(err);
    }
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}

main().catch(showError);
