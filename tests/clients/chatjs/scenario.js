// A whole customer chat through the official ChatJS client, written once for Node and for a
// browser page. It uses only what both have (fetch, File, Blob) and the `connect` global that
// ChatJS installs. The driver hands in the chat details (StartChatContact is a backend call,
// never made from a page) and the simulator's fault knobs.
//
// Every step waits for an event ChatJS raises, with a deadline; a missing event fails the run
// with the step's name.
(function (root) {
  "use strict";

  const EVENT = "application/vnd.amazonaws.connect.event.";
  const STEP_MS = 10000;

  class Events {
    constructor() {
      this.seen = {};
      this.waiters = [];
    }
    push(kind, event) {
      (this.seen[kind] = this.seen[kind] || []).push(event);
      this.waiters = this.waiters.filter((w) => {
        if (w.kind === kind && w.pred(event)) {
          clearTimeout(w.timer);
          w.resolve(event);
          return false;
        }
        return true;
      });
    }
    all(kind) {
      return this.seen[kind] || [];
    }
    // Resolves with the first event of `kind` matching `pred`, seen or still to come.
    wait(kind, pred, what, ms = STEP_MS) {
      const seen = this.all(kind);
      const at = seen.findIndex(pred);
      if (at >= 0) return Promise.resolve(seen[at]);
      return new Promise((resolve, reject) => {
        const w = { kind, pred, resolve };
        w.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
        }, ms);
        this.waiters.push(w);
      });
    }
  }

  function check(cond, what) {
    if (!cond) throw new Error(`check failed: ${what}`);
  }

  // ChatJS logs arrays of strings and Errors.
  function text(parts) {
    return parts
      .map((x) => (typeof x === "string" ? x : x instanceof Error ? x.stack || String(x) : JSON.stringify(x, (k, v) => (v instanceof Error ? v.stack || String(v) : v))))
      .join(" ");
  }

  function ids(items) {
    return items.map((i) => i.Id);
  }

  // Every page of a transcript, following NextToken.
  async function allPages(session, args) {
    const pages = [];
    let nextToken;
    for (let n = 0; n < 100; n++) {
      const r = await session.getTranscript(Object.assign({}, args, nextToken ? { nextToken } : {}));
      pages.push(r.data.Transcript);
      nextToken = r.data.NextToken;
      if (!nextToken) return pages;
    }
    throw new Error("transcript paging did not end after 100 pages");
  }

  // opts: { connect, endpoint, region, chatDetails,
  //         sim: { dropSockets(), say(text), answerDelay(ms) },
  //         globalConfig (merged into setGlobalConfig), log(line) }
  root.runCustomerChat = async function runCustomerChat(opts) {
    const { connect, chatDetails, sim } = opts;
    const log = opts.log || (() => {});
    const step = (name) => log(`chatjs: ${name}`);
    const problems = [];
    connect.ChatSession.setGlobalConfig(
      Object.assign(
        {
          region: opts.region,
          endpoint: opts.endpoint,
          loggerConfig: {
            level: connect.ChatSession.LogLevel.WARN,
            // ChatJS's own trace (ADVANCED_LOG) goes to debug, shown with CHATJS_VERBOSE.
            advancedLogWriter: "debug",
            customizedLogger: {
              debug: (...m) => globalThis.CHATJS_VERBOSE && log(`chatjs trace: ${text(m)}`),
              info: () => {},
              warn: (...m) => log(`chatjs warn: ${text(m)}`),
              error: (...m) => {
                const line = text(m);
                problems.push(line);
                log(`chatjs error: ${line}`);
              },
            },
          },
        },
        opts.globalConfig || {}
      )
    );
    const session = connect.ChatSession.create({
      chatDetails: {
        contactId: chatDetails.ContactId,
        participantId: chatDetails.ParticipantId,
        participantToken: chatDetails.ParticipantToken,
      },
      options: { region: opts.region },
      type: connect.ChatSession.SessionTypes.CUSTOMER,
      disableCSM: true,
    });
    const ev = new Events();
    session.onMessage((e) => ev.push("message", e.data));
    session.onTyping((e) => ev.push("typing", e.data));
    session.onReadReceipt((e) => ev.push("read", e.data));
    session.onDeliveredReceipt((e) => ev.push("delivered", e.data));
    session.onConnectionEstablished((e) => ev.push("established", e.data));
    session.onConnectionLost((e) => ev.push("lost", e.data));
    session.onConnectionBroken((e) => ev.push("broken", e.data));
    session.onEnded((e) => ev.push("ended", e.data));
    // Subscribing here turns on ChatJS's own transcript fetch after every (re)connection.
    session.onTranscriptUpdated((e) => ev.push("transcript", e.data));

    step("connect");
    const connected = await session.connect();
    check(connected && connected.connectSuccess, "connect() succeeds");
    await ev.wait("established", () => true, "the connection to be established");
    // The agent may have joined before the socket was subscribed: a widget sees it in the
    // transcript ChatJS fetches on connecting, else on the socket.
    const agentJoined = (m) => m.ContentType === EVENT + "participant.joined" && m.ParticipantRole === "AGENT";
    await Promise.race([
      ev.wait("message", agentJoined, "the agent to join"),
      ev.wait("transcript", (t) => (t.transcript || []).some(agentJoined), "the agent to join"),
    ]);

    step("message, typing and receipts");
    const hello = (await session.sendMessage({ contentType: "text/plain", message: "Hello from ChatJS" })).data;
    check(hello.Id && hello.AbsoluteTime, "SendMessage answers Id and AbsoluteTime");
    const reply = await ev.wait(
      "message",
      (m) => m.Type === "MESSAGE" && m.ParticipantRole === "AGENT" && /Hello from ChatJS/.test(m.Content),
      "the agent's reply"
    );
    await ev.wait("typing", (t) => t.ParticipantRole === "AGENT", "the agent typing");
    const receiptFor = (r) => r.MessageMetadata && r.MessageMetadata.MessageId === hello.Id;
    await ev.wait("delivered", receiptFor, "the agent's delivered receipt for our message");
    await ev.wait("read", receiptFor, "the agent's read receipt for our message");
    await session.sendEvent({ contentType: EVENT + "typing" });
    const content = JSON.stringify({ messageId: reply.Id });
    await session.sendEvent({ contentType: EVENT + "message.delivered", content });
    await session.sendEvent({ contentType: EVENT + "message.read", content });

    step("transcript without a start position (ChatJS sends StartPosition {})");
    const recent = (await session.getTranscript({ scanDirection: "BACKWARD", sortOrder: "ASCENDING", maxResults: 15 })).data;
    check(recent.InitialContactId === chatDetails.ContactId, "InitialContactId is the contact");
    const recentIds = ids(recent.Transcript);
    check(recentIds.includes(hello.Id) && recentIds.includes(reply.Id), "the transcript holds our message and the reply");
    const times = recent.Transcript.map((i) => i.AbsoluteTime);
    check(times.every((t, n) => n === 0 || times[n - 1] <= t), "ASCENDING is oldest first");

    step("transcript from a start position");
    const fromId = (await session.getTranscript({
      scanDirection: "FORWARD", sortOrder: "ASCENDING", maxResults: 100, startPosition: { id: hello.Id },
    })).data.Transcript;
    check(fromId.length > 0 && fromId[0].Id === hello.Id, "FORWARD from an Id starts at that item");
    check(ids(fromId).includes(reply.Id), "FORWARD from our message reaches the reply");
    const fromTime = (await session.getTranscript({
      scanDirection: "FORWARD", sortOrder: "ASCENDING", maxResults: 100, startPosition: { absoluteTime: hello.AbsoluteTime },
    })).data.Transcript;
    check(fromTime.every((i) => i.AbsoluteTime >= hello.AbsoluteTime), "FORWARD from a time holds nothing older");
    check(ids(fromTime).includes(hello.Id), "FORWARD from a message's time includes it");

    step("transcript paged by nextToken");
    for (let n = 1; n <= 3; n++) {
      const sent = (await session.sendMessage({ contentType: "text/plain", message: `page ${n}` })).data;
      await ev.wait("message", (m) => m.Type === "MESSAGE" && m.ParticipantRole === "AGENT" && m.Content.endsWith(`page ${n}`), `the reply to page ${n}`);
      check(sent.Id, "SendMessage answers an Id");
    }
    const whole = ids((await session.getTranscript({ scanDirection: "BACKWARD", sortOrder: "ASCENDING", maxResults: 100 })).data.Transcript);
    const pages = await allPages(session, { scanDirection: "BACKWARD", sortOrder: "ASCENDING", maxResults: 2 });
    const paged = [].concat(...pages.map(ids));
    check(pages.length > 2, `more than two pages of two (got ${pages.length})`);
    check(pages.every((p) => p.length <= 2), "no page holds more than maxResults");
    check(new Set(paged).size === paged.length, "no item appears on two pages");
    check(paged.length === whole.length && whole.every((id) => paged.includes(id)), "the pages together are the whole transcript");

    step("attachment");
    const file = new File(["a note from ChatJS\n"], "note.txt", { type: "text/plain" });
    await session.sendAttachment({ attachment: file });
    const attached = await ev.wait(
      "message",
      (m) => m.Type === "ATTACHMENT" && m.Attachments && m.Attachments[0].AttachmentName === "note.txt" && m.Attachments[0].Status === "APPROVED",
      "the approved attachment item"
    );
    const blob = await session.downloadAttachment({ attachmentId: attached.Attachments[0].AttachmentId });
    check((await blob.text()) === "a note from ChatJS\n", "the downloaded attachment is the uploaded file");

    step("socket drop: ChatJS reconnects and fetches the transcript itself");
    const establishedBefore = ev.all("established").length;
    // Connect answers slowly while the socket is down, so ChatJS's new socket cannot be
    // subscribed before the message below is said: it can only come by the transcript ChatJS
    // fetches once it is connected again. (ChatJS gives up on a failing
    // CreateParticipantConnection at this point, so slow it is, not failing.)
    await sim.answerDelay(1500);
    const dropped = await sim.dropSockets();
    check(dropped >= 1, "the simulator dropped the socket");
    const gap = await sim.say("said while the socket was down");
    await sim.answerDelay(0);
    await ev.wait("established", () => ev.all("established").length > establishedBefore, "the connection to be re-established", 30000);
    await ev.wait(
      "transcript",
      (t) => ids(t.transcript || []).includes(gap),
      "ChatJS's own transcript fetch after reconnecting to bring the message said meanwhile",
      30000
    );
    check(!ids(ev.all("message")).includes(gap), "the message said during the gap came by the transcript, not the socket");
    const afterDrop = (await session.sendMessage({ contentType: "text/plain", message: "after the drop" })).data;
    await ev.wait("message", (m) => m.Type === "MESSAGE" && m.ParticipantRole === "AGENT" && /after the drop/.test(m.Content), "a reply on the new socket");
    check(afterDrop.Id, "SendMessage works after the reconnect");

    step("disconnect");
    await session.disconnectParticipant();
    await ev.wait("ended", () => true, "onEnded");
    check(ev.all("broken").length === 0, "the connection never broke for good");
    if (problems.length) throw new Error(`ChatJS logged errors:\n${problems.join("\n")}`);
    return {
      messages: ev.all("message").length,
      typing: ev.all("typing").length,
      receipts: ev.all("read").length + ev.all("delivered").length,
      pages: pages.length,
      reconnects: ev.all("established").length - 1,
    };
  };
})(typeof window !== "undefined" ? window : globalThis);
