"""A whole chat through connect-chat-gateway with the standard Python gRPC client (grpcio).

Start the gateway (`cargo run` serves it on 127.0.0.1:50051 with its embedded Connect
simulator), then:

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python chat.py [host:port]

It compiles the API from proto/ (grpcio-tools ships the compiler), starts a chat, follows its
events on a Subscribe stream, sends a message, waits for the agent's answer, sends typing and
a read receipt, reads the transcript and ends the chat. It exits non-zero if any step fails.
"""

import atexit
import importlib
import os
import pathlib
import queue
import shutil
import sys
import tempfile
import threading

import grpc
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[2] / "proto"
WAIT = 15.0  # seconds for any one expected event


def load_api():
    """Generates the Python modules of the API into a temporary directory and imports them."""
    out = tempfile.mkdtemp(prefix="chatgateway-py-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "chatgateway" / "v1" / "gateway.proto"),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    pb = importlib.import_module("chatgateway.v1.gateway_pb2")
    rpc = importlib.import_module("chatgateway.v1.gateway_pb2_grpc")
    return pb, rpc


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GATEWAY_ADDR", "127.0.0.1:50051")
    pb, rpc = load_api()
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=WAIT)
    gateway = rpc.ChatGatewayStub(channel)

    started = gateway.StartChat(pb.StartChatRequest(display_name="Ada (Python)"), timeout=WAIT)
    chat = pb.ChatRef(contact_id=started.contact_id, chat_token=started.chat_token)
    print(f"started chat {started.contact_id}")

    # The stream is read on a thread; the main thread waits for what it expects.
    events = queue.Queue()
    stream = gateway.Subscribe(pb.SubscribeRequest(chat=chat))

    def read():
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                events.put(e)
        events.put(None)

    threading.Thread(target=read, daemon=True).start()

    def wait_for(what, matches):
        while True:
            try:
                event = events.get(timeout=WAIT)
            except queue.Empty:
                sys.exit(f"no {what} within {WAIT} s")
            if event is None or isinstance(event, grpc.RpcError):
                sys.exit(f"the stream ended before {what}: {event}")
            if matches(event):
                return event

    wait_for("stream start", lambda e: e.WhichOneof("event") == "started")

    sent = gateway.SendMessage(
        pb.SendMessageRequest(chat=chat, content="Hello from Python"), timeout=WAIT
    )
    print(f"sent message {sent.message_id}")

    agent = pb.PARTICIPANT_ROLE_AGENT
    answer = wait_for(
        "the agent's answer",
        lambda e: e.WhichOneof("event") == "message" and e.sender.role == agent,
    )
    print(f"agent said: {answer.message.content}")

    gateway.SendEvent(pb.SendEventRequest(chat=chat, type=pb.EVENT_TYPE_TYPING), timeout=WAIT)
    gateway.SendEvent(
        pb.SendEventRequest(chat=chat, type=pb.EVENT_TYPE_READ, message_id=answer.item_id),
        timeout=WAIT,
    )
    print("sent typing and a read receipt")

    page = gateway.GetTranscript(pb.GetTranscriptRequest(chat=chat, page_size=100), timeout=WAIT)
    texts = [e.message.content for e in page.events if e.WhichOneof("event") == "message"]
    if "Hello from Python" not in texts or answer.message.content not in texts:
        sys.exit(f"the transcript lacks the conversation: {texts}")
    print(f"transcript: {len(page.events)} items")

    gateway.EndChat(pb.EndChatRequest(chat=chat), timeout=WAIT)
    wait_for("the chat's end", lambda e: e.WhichOneof("event") == "chat_ended")
    print("chat ended")
    stream.cancel()
    channel.close()


if __name__ == "__main__":
    main()
