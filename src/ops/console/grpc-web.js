// A small gRPC-Web client for the chat page: the protobuf wire format for the messages the
// page uses, and unary and server-streaming calls over fetch. No dependencies: the page is
// served from the gateway binary as it is.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Builds one protobuf message. Fields equal to their default are left out, as proto3 does.
export class Writer {
  constructor() {
    this.parts = [];
  }
  varint(n) {
    while (n > 0x7f) {
      this.parts.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.parts.push(n);
  }
  tag(field, wire) {
    this.varint(field * 8 + wire);
  }
  bytes(field, b) {
    this.tag(field, 2);
    this.varint(b.length);
    for (const x of b) this.parts.push(x);
  }
  string(field, s) {
    if (s) this.bytes(field, encoder.encode(s));
    return this;
  }
  uint(field, n) {
    if (n) {
      this.tag(field, 0);
      this.varint(n);
    }
    return this;
  }
  message(field, writer) {
    this.bytes(field, writer.finish());
    return this;
  }
  finish() {
    return Uint8Array.from(this.parts);
  }
}

// Reads a message into a map of field number to its values (numbers for varints,
// Uint8Array for length-delimited fields); fixed-width fields are skipped.
export function fields(buf) {
  const out = new Map();
  let i = 0;
  const varint = () => {
    let n = 0;
    let scale = 1;
    for (;;) {
      if (i >= buf.length) throw new Error("truncated protobuf");
      const b = buf[i++];
      n += (b & 0x7f) * scale;
      if (b < 0x80) return n;
      scale *= 0x80;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    let value;
    switch (key % 8) {
      case 0:
        value = varint();
        break;
      case 1:
        i += 8;
        continue;
      case 2: {
        const len = varint();
        value = buf.subarray(i, i + len);
        i += len;
        break;
      }
      case 5:
        i += 4;
        continue;
      default:
        throw new Error("unsupported protobuf wire type");
    }
    if (!out.has(field)) out.set(field, []);
    out.get(field).push(value);
  }
  return out;
}

// Accessors on a field map: the last value of a field, as proto3 reads it.
export const last = (f, n) => {
  const v = f.get(n);
  return v ? v[v.length - 1] : undefined;
};
export const str = (f, n) => {
  const v = last(f, n);
  return v === undefined ? "" : decoder.decode(v);
};
export const num = (f, n) => last(f, n) ?? 0;
export const msg = (f, n) => {
  const v = last(f, n);
  return v === undefined ? undefined : fields(v);
};

// A call that ended with a gRPC status other than OK.
export class GrpcError extends Error {
  constructor(code, message) {
    super(`${CODE_NAMES[code] ?? code}: ${message}`);
    this.code = code;
    this.grpcMessage = message;
  }
}

export const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
];

function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

function parseTrailers(text) {
  const map = new Map();
  for (const line of text.split("\r\n")) {
    const at = line.indexOf(":");
    if (at > 0) map.set(line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim());
  }
  return map;
}

function statusOf(get) {
  const code = get("grpc-status");
  if (code === null || code === undefined) return null;
  let message = get("grpc-message") ?? "";
  try {
    message = decodeURIComponent(message);
  } catch (_) {
    // Left as sent.
  }
  return { code: Number(code), message };
}

export class Client {
  // base: the gRPC port's URL (scheme://host:port); headers: extra request metadata
  // (credentials).
  constructor(base, headers = {}) {
    this.base = base.replace(/\/$/, "");
    this.headers = headers;
  }

  async *call(method, request, signal) {
    const response = await fetch(`${this.base}/${method}`, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "connect-chat-gateway-console/1",
        ...this.headers,
      },
      body: frame(request),
      signal,
    });
    // A trailers-only answer carries the status in the headers.
    const early = statusOf((h) => response.headers.get(h));
    if (early && early.code !== 0) throw new GrpcError(early.code, early.message);
    if (!response.ok) throw new GrpcError(2, `HTTP ${response.status}`);
    const reader = response.body.getReader();
    let buf = new Uint8Array(0);
    for (;;) {
      const { done, value } = await reader.read();
      if (value) {
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf);
        joined.set(value, buf.length);
        buf = joined;
      }
      while (buf.length >= 5) {
        const len = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
        if (buf.length < 5 + len) break;
        const flags = buf[0];
        const body = buf.slice(5, 5 + len);
        buf = buf.slice(5 + len);
        if (flags & 0x80) {
          const trailers = parseTrailers(decoder.decode(body));
          const status = statusOf((h) => trailers.get(h));
          if (status && status.code !== 0) throw new GrpcError(status.code, status.message);
          return;
        }
        yield body;
      }
      if (done) {
        if (early) return;
        throw new GrpcError(14, "the stream ended without a status");
      }
    }
  }

  async unary(method, request) {
    let answer;
    for await (const m of this.call(method, request)) answer = m;
    if (answer === undefined) throw new GrpcError(13, "no response message");
    return fields(answer);
  }

  async *stream(method, request, signal) {
    for await (const m of this.call(method, request, signal)) yield fields(m);
  }
}
