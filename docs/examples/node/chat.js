// A whole chat through connect-chat-gateway with the standard Node gRPC client
// (@grpc/grpc-js, the API loaded from proto/ by @grpc/proto-loader).
//
// Start the gateway (`cargo run` serves it on 127.0.0.1:50051 with its embedded Connect
// simulator), then:
//
//     npm ci && node chat.js [host:port]
//
// It starts a chat, follows its events on a Subscribe stream, sends a message, waits for the
// agent's answer, sends typing and a read receipt, reads the transcript and ends the chat. It
// exits non-zero if any step fails.

'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const WAIT_MS = 15000; // for any one expected event
const addr = process.argv[2] || process.env.GATEWAY_ADDR || '127.0.0.1:50051';

const definition = protoLoader.loadSync('chatgateway/v1/gateway.proto', {
  includeDirs: [path.join(__dirname, '..', '..', '..', 'proto')],
  keepCase: true,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { ChatGateway } = grpc.loadPackageDefinition(definition).chatgateway.v1;
const gateway = new ChatGateway(addr, grpc.credentials.createInsecure());

/** A unary call as a promise, with a deadline. */
function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + WAIT_MS);
    gateway[method](request, { deadline }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/** The events of a Subscribe stream, taken in order by `next`. */
function events(stream) {
  const queue = [];
  let waiter = null;
  let ended = null;
  const wake = () => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w();
    }
  };
  stream.on('data', (event) => {
    queue.push(event);
    wake();
  });
  stream.on('end', () => {
    ended = new Error('the stream ended');
    wake();
  });
  stream.on('error', (err) => {
    ended = err;
    wake();
  });
  /** The first event from here on that `matches` accepts (the ones before it are skipped). */
  return async function next(what, matches) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      while (queue.length > 0) {
        const event = queue.shift();
        if (matches(event)) return event;
      }
      if (ended) throw new Error(`no ${what}: ${ended.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${WAIT_MS} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  };
}

async function main() {
  const started = await call('StartChat', { display_name: 'Ada (Node)' });
  const chat = { contact_id: started.contact_id, chat_token: started.chat_token };
  console.log(`started chat ${started.contact_id}`);

  const stream = gateway.Subscribe({ chat });
  const next = events(stream);
  await next('stream start', (e) => e.event === 'started');
  const sent = await call('SendMessage', { chat, content: 'Hello from Node' });
  console.log(`sent message ${sent.message_id}`);

  const answer = await next(
    "the agent's answer",
    (e) => e.event === 'message' && e.sender && e.sender.role === 'PARTICIPANT_ROLE_AGENT',
  );
  console.log(`agent said: ${answer.message.content}`);

  await call('SendEvent', { chat, type: 'EVENT_TYPE_TYPING' });
  await call('SendEvent', { chat, type: 'EVENT_TYPE_READ', message_id: answer.item_id });
  console.log('sent typing and a read receipt');

  const page = await call('GetTranscript', { chat, page_size: 100 });
  const texts = page.events.filter((e) => e.event === 'message').map((e) => e.message.content);
  if (!texts.includes('Hello from Node') || !texts.includes(answer.message.content)) {
    throw new Error(`the transcript lacks the conversation: ${JSON.stringify(texts)}`);
  }
  console.log(`transcript: ${page.events.length} items`);

  await call('EndChat', { chat });
  await next("the chat's end", (e) => e.event === 'chat_ended');
  console.log('chat ended');
  stream.cancel();
  gateway.close();
}

main().catch((err) => {
  console.error(`chat failed: ${err.message || err}`);
  process.exit(1);
});
