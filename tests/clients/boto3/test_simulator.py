"""boto3 (pinned) against the standalone Connect simulator.

Every operation the simulator serves is called through boto3 as an application would, and every
answer is held to the published model botocore ships (see model.py): each error is one the
model lists for its operation, with the model's HTTP status, the `X-Amzn-ErrorType` header and a
`Message`; every answer carries a request id. Each field constraint of the model is tried out
of bounds and must be refused. Run: CONNECT_SIM_ENDPOINT=http://127.0.0.1:8787 python -m
unittest -v test_simulator (from this folder).
"""

import copy
import json
import os
import unittest
import urllib.request
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

import model

ENDPOINT = os.environ.get("CONNECT_SIM_ENDPOINT", "http://127.0.0.1:8787").rstrip("/")
EVENT = "application/vnd.amazonaws.connect.event."
# Errors every AWS service may answer beyond an operation's model: request-rate throttling.
SERVICE_WIDE = {"ThrottlingException": 429}

CALLS = []  # (service, operation, HTTP status, headers, parsed answer), for every call


def _record(http_response, parsed, model, **_):
    CALLS.append(
        (model.service_model.service_name, model.name, http_response.status_code,
         {k.lower(): v for k, v in http_response.headers.items()}, parsed)
    )


def client(service, validate=True):
    c = boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        # The connect service checks SigV4's presence, not its keys; participant calls ignore it.
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(
            # One attempt: an injected fault must reach the test, not be retried away.
            retries={"total_max_attempts": 1},
            parameter_validation=validate,
        ),
    )
    c.meta.events.register("after-call", _record)
    return c


CONNECT = client("connect")
PARTICIPANT = client("connectparticipant")
# The same clients without botocore's own checks, so out-of-bounds values reach the simulator.
RAW = {"connect": client("connect", False), "connectparticipant": client("connectparticipant", False)}


def sim(path, body=None):
    req = urllib.request.Request(
        ENDPOINT + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as res:
        return json.loads(res.read() or b"{}")


def start_chat(name="boto3"):
    return CONNECT.start_chat_contact(
        InstanceId="boto3-suite",
        ContactFlowId="boto3-flow",
        ParticipantDetails={"DisplayName": name},
    )


class Chat:
    """A customer in a chat, connected, with an attachment uploaded and one only started."""

    def __init__(self, name="boto3"):
        started = start_chat(name)
        self.contact_id = started["ContactId"]
        self.participant_token = started["ParticipantToken"]
        conn = PARTICIPANT.create_participant_connection(
            Type=["WEBSOCKET", "CONNECTION_CREDENTIALS"],
            ParticipantToken=self.participant_token,
            ConnectParticipant=True,
        )
        self.token = conn["ConnectionCredentials"]["ConnectionToken"]
        self.socket_url = conn["Websocket"]["Url"]
        self.attachment_id = self.upload(b"hello", complete=True)
        self.pending_attachment_id = self.upload(b"pending", complete=False)

    def upload(self, data, complete, name="note.txt", content_type="text/plain"):
        started = PARTICIPANT.start_attachment_upload(
            ContentType=content_type,
            AttachmentSizeInBytes=len(data),
            AttachmentName=name,
            ClientToken=str(uuid.uuid4()),
            ConnectionToken=self.token,
        )
        meta = started["UploadMetadata"]
        put = urllib.request.Request(meta["Url"], data=data, method="PUT", headers=meta["HeadersToInclude"])
        with urllib.request.urlopen(put) as res:
            assert res.status == 200, res.status
        if complete:
            PARTICIPANT.complete_attachment_upload(
                AttachmentIds=[started["AttachmentId"]],
                ClientToken=str(uuid.uuid4()),
                ConnectionToken=self.token,
            )
        return started["AttachmentId"]

    def request(self, operation):
        """A valid request for `operation` in this chat."""
        session = str(uuid.uuid4())
        return {
            "StartChatContact": {
                "InstanceId": "boto3-suite",
                "ContactFlowId": "boto3-flow",
                "ParticipantDetails": {"DisplayName": "boto3"},
                "InitialMessage": {"ContentType": "text/plain", "Content": "hi"},
            },
            "CreateParticipantConnection": {
                "Type": ["CONNECTION_CREDENTIALS"],
                "ParticipantToken": self.participant_token,
                "ConnectParticipant": True,
            },
            "SendMessage": {"ContentType": "text/plain", "Content": "hello", "ConnectionToken": self.token},
            "SendEvent": {"ContentType": EVENT + "typing", "ConnectionToken": self.token},
            "GetTranscript": {"MaxResults": 10, "ConnectionToken": self.token},
            "DisconnectParticipant": {"ConnectionToken": self.token},
            "StartAttachmentUpload": {
                "ContentType": "text/plain",
                "AttachmentSizeInBytes": 5,
                "AttachmentName": "a.txt",
                "ClientToken": str(uuid.uuid4()),
                "ConnectionToken": self.token,
            },
            "CompleteAttachmentUpload": {
                "AttachmentIds": [self.pending_attachment_id],
                "ClientToken": str(uuid.uuid4()),
                "ConnectionToken": self.token,
            },
            "GetAttachment": {"AttachmentId": self.attachment_id, "UrlExpiryInSeconds": 60, "ConnectionToken": self.token},
            "DescribeView": {"ViewToken": "sample-view", "ConnectionToken": self.token},
            "GetAuthenticationUrl": {"SessionId": session, "RedirectUri": "https://example.com/back", "ConnectionToken": self.token},
            "CancelParticipantAuthentication": {"SessionId": session, "ConnectionToken": self.token},
        }[operation]


def call(service, operation, request, raw=False):
    """Calls `operation` by its API name through boto3 (`raw`: without botocore's checks)."""
    c = RAW[service] if raw else {"connect": CONNECT, "connectparticipant": PARTICIPANT}[service]
    method = {api: py for py, api in c.meta.method_to_api_mapping.items()}[operation]
    return getattr(c, method)(**request)


def expect_error(test, codes, fn, *args, **kwargs):
    """Calls fn; it must raise a ClientError with one of `codes`. Returns the error."""
    with test.assertRaises(ClientError) as caught:
        fn(*args, **kwargs)
    code = caught.exception.response["Error"]["Code"]
    test.assertIn(code, codes, caught.exception.response)
    return caught.exception


def set_path(request, path, value):
    """A copy of `request` with the member at `path` set (parents created) or removed (None)."""
    out = copy.deepcopy(request)
    node = out
    for name in path[:-1]:
        node = node.setdefault(name, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


def out_of_bounds(member):
    """(what, value) pairs just outside a member shape's constraints."""
    meta, kind = member.metadata, member.type_name
    lo, hi = meta.get("min"), meta.get("max")
    out = []
    if getattr(member, "enum", None):
        out.append(("a value outside the enum", "NOT_A_MODEL_VALUE"))
    if kind == "string":
        if hi is not None:
            out.append((f"{hi + 1} chars", "a" * (hi + 1)))
        if lo:
            out.append((f"{lo - 1} chars", "a" * (lo - 1)))
    elif kind in ("integer", "long"):
        if hi is not None:
            out.append((f"{hi + 1}", hi + 1))
        if lo is not None:
            out.append((f"{lo - 1}", lo - 1))
    elif kind == "list":
        item = (getattr(member.member, "enum", None) or ["x"])[0]
        if hi is not None:
            out.append((f"{hi + 1} items", [item] * (hi + 1)))
        if lo:
            out.append((f"{lo - 1} items", [item] * (lo - 1)))
    return out


class Operations(unittest.TestCase):
    def test_a_whole_chat_through_every_operation(self):
        chat = Chat("whole chat")
        sent = PARTICIPANT.send_message(ContentType="text/plain", Content="hello from boto3", ConnectionToken=chat.token)
        self.assertTrue(sent["Id"] and sent["AbsoluteTime"].endswith("Z"), sent)
        PARTICIPANT.send_event(ContentType=EVENT + "typing", ConnectionToken=chat.token)
        receipt = json.dumps({"messageId": sent["Id"]})
        PARTICIPANT.send_event(ContentType=EVENT + "message.read", Content=receipt, ConnectionToken=chat.token)

        transcript = PARTICIPANT.get_transcript(
            ConnectionToken=chat.token, ScanDirection="FORWARD", SortOrder="ASCENDING",
            StartPosition={"Id": sent["Id"]}, MaxResults=100,
        )
        self.assertEqual(transcript["InitialContactId"], chat.contact_id)
        self.assertEqual(transcript["Transcript"][0]["Id"], sent["Id"])
        self.assertEqual(transcript["Transcript"][0]["Content"], "hello from boto3")

        # Paged: the pages together are the whole transcript, each item once.
        whole = [i["Id"] for i in PARTICIPANT.get_transcript(ConnectionToken=chat.token, MaxResults=100)["Transcript"]]
        paged, token = [], None
        for _ in range(100):
            page = PARTICIPANT.get_transcript(ConnectionToken=chat.token, MaxResults=1, **({"NextToken": token} if token else {}))
            paged += [i["Id"] for i in page["Transcript"]]
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(sorted(paged), sorted(whole))
        self.assertEqual(len(set(paged)), len(paged))

        got = PARTICIPANT.get_attachment(AttachmentId=chat.attachment_id, ConnectionToken=chat.token, UrlExpiryInSeconds=60)
        with urllib.request.urlopen(got["Url"]) as res:
            self.assertEqual(res.read(), b"hello")
        self.assertEqual(got["AttachmentSizeInBytes"], 5)

        view = PARTICIPANT.describe_view(ViewToken="sample-view", ConnectionToken=chat.token)["View"]
        self.assertTrue({"Id", "Arn", "Name", "Version", "Content"} <= set(view), view)
        session = str(uuid.uuid4())
        url = PARTICIPANT.get_authentication_url(SessionId=session, RedirectUri="https://example.com/back", ConnectionToken=chat.token)
        self.assertTrue(url["AuthenticationUrl"].startswith("http"), url)
        PARTICIPANT.cancel_participant_authentication(SessionId=session, ConnectionToken=chat.token)

        PARTICIPANT.disconnect_participant(ConnectionToken=chat.token)
        # Every participant operation on a chat that has ended is an AccessDeniedException.
        for service, operation in model.SERVED[1:]:
            with self.subTest(operation=operation):
                err = expect_error(self, {"AccessDeniedException"}, call, service, operation, chat.request(operation))
                self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    def test_every_served_operation_was_called_and_every_answer_matches_the_model(self):
        # unittest runs classes and methods in name order, so this runs last and sees the calls
        # of the whole module (Constraints, Errors, then the whole chat above); run alone, it
        # makes the calls it needs.
        if not CALLS:
            self.test_a_whole_chat_through_every_operation()
        called = {(s, o) for s, o, *_ in CALLS}
        self.assertEqual(sorted(set(model.SERVED) - called), [], "operations never called")
        for service, operation, status, headers, parsed in CALLS:
            with self.subTest(operation=operation, status=status):
                self.assertTrue(headers.get("x-amzn-requestid"), "every answer carries a request id")
                if status < 300:
                    continue
                allowed = dict(SERVICE_WIDE, **model.errors(model.service(service).operation_model(operation)))
                code = parsed["Error"]["Code"]
                self.assertIn(code, allowed, f"{operation} answered an error its model does not list")
                self.assertEqual(status, allowed[code], f"{code}'s HTTP status")
                self.assertEqual(headers.get("x-amzn-errortype", "").split(":")[0], code)
                self.assertTrue(parsed["Error"]["Message"], "an error carries a Message")


class Errors(unittest.TestCase):
    def test_a_bad_token_is_access_denied_everywhere(self):
        chat = Chat("bad token")
        for service, operation in model.SERVED[1:]:
            request = chat.request(operation)
            key = "ParticipantToken" if operation == "CreateParticipantConnection" else "ConnectionToken"
            request[key] = "not-a-token"
            with self.subTest(operation=operation):
                err = expect_error(self, {"AccessDeniedException"}, call, service, operation, request)
                self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    def test_injected_faults_answer_the_modelled_error(self):
        chat = Chat("faults")
        kinds = {"Throttling": ("ThrottlingException", 429), "InternalServer": (None, 500)}
        for service, operation in model.SERVED:
            for kind, (code, status) in kinds.items():
                if code is None:
                    code = "InternalServiceException" if service == "connect" else "InternalServerException"
                with self.subTest(operation=operation, kind=kind):
                    sim("/_sim/faults", {"operation": operation, "count": 1, "kind": kind})
                    err = expect_error(self, {code}, call, service, operation, chat.request(operation))
                    self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], status)

    def test_unknown_view_is_resource_not_found(self):
        chat = Chat("views")
        err = expect_error(self, {"ResourceNotFoundException"}, PARTICIPANT.describe_view, ViewToken="no-such-view", ConnectionToken=chat.token)
        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 404)

    def test_an_attachment_over_20_mb_is_over_quota_before_any_upload(self):
        chat = Chat("big file")
        err = expect_error(
            self, {"ServiceQuotaExceededException"}, PARTICIPANT.start_attachment_upload,
            ContentType="application/pdf", AttachmentSizeInBytes=20 * 1024 * 1024 + 1,
            AttachmentName="big.pdf", ClientToken=str(uuid.uuid4()), ConnectionToken=chat.token,
        )
        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 402)

    def test_completing_an_upload_whose_file_never_arrived_is_a_conflict(self):
        chat = Chat("no file")
        started = PARTICIPANT.start_attachment_upload(
            ContentType="text/plain", AttachmentSizeInBytes=4, AttachmentName="never.txt",
            ClientToken=str(uuid.uuid4()), ConnectionToken=chat.token,
        )
        err = expect_error(
            self, {"ConflictException"}, PARTICIPANT.complete_attachment_upload,
            AttachmentIds=[started["AttachmentId"]], ClientToken=str(uuid.uuid4()), ConnectionToken=chat.token,
        )
        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 409)


class Constraints(unittest.TestCase):
    def test_every_model_constraint_is_enforced(self):
        """Each constrained body member of every served operation, just out of bounds (and each
        required one left out), is refused with the operation's validation error."""
        tried = 0
        for service, operation in model.SERVED:
            op = model.service(service).operation_model(operation)
            validation = {"ValidationException"} if service == "connectparticipant" else {
                "InvalidParameterException", "InvalidRequestException"}
            chat = Chat(f"constraints {operation}")
            base = chat.request(operation)
            for path, member, required, where in model.constraints(op.input_shape):
                if where != "body":
                    continue  # tokens in headers are checked as tokens (AccessDeniedException)
                cases = out_of_bounds(member)
                # botocore fills a left-out idempotency token itself (as every SDK does).
                token = member.metadata.get("idempotencyToken")
                if required and not token and (len(path) == 1 or path[0] in base):
                    cases.append(("left out", None))
                for what, value in cases:
                    tried += 1
                    with self.subTest(operation=operation, member=".".join(path), value=what):
                        request = set_path(base, path, value)
                        err = expect_error(self, validation, call, service, operation, request, raw=True)
                        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertGreater(tried, 40)

    def test_content_types_are_those_connect_accepts(self):
        """Messages only in the types the chat listed (text/plain and interactive responses by
        default), JSON types carrying JSON; events only in the event types (reference)."""
        chat = Chat("content types")
        refused = [
            ("SendMessage", {"ContentType": "text/markdown", "Content": "not listed by this chat"}),
            ("SendMessage", {"ContentType": "image/png", "Content": "not a message type"}),
            ("SendMessage", {"ContentType": "application/vnd.amazonaws.connect.message.interactive.response", "Content": "not JSON"}),
            ("SendEvent", {"ContentType": "text/plain", "Content": "not an event type"}),
            ("SendEvent", {"ContentType": EVENT + "participant.joined"}),
        ]
        for operation, body in refused:
            with self.subTest(operation=operation, **body):
                expect_error(self, {"ValidationException"}, call, "connectparticipant", operation,
                             dict(body, ConnectionToken=chat.token))
        message_id = PARTICIPANT.send_message(ContentType="text/plain", Content="hi", ConnectionToken=chat.token)["Id"]
        for event in ("typing", "message.delivered", "message.read"):
            content = None if event == "typing" else json.dumps({"messageId": message_id})
            PARTICIPANT.send_event(ContentType=EVENT + event, ConnectionToken=chat.token,
                                   **({"Content": content} if content else {}))

    def test_message_limits_per_content_type(self):
        """The service's limits per content type, inside the model's 16,384 (documented, not in
        the model): the bound is accepted, one more is refused."""
        limits = {
            "text/plain": 1024,
            "text/markdown": 1024,
            "application/json": 12000,
            "application/vnd.amazonaws.connect.message.interactive.response": 12288,
        }
        started = CONNECT.start_chat_contact(
            InstanceId="boto3-suite", ContactFlowId="boto3-flow",
            ParticipantDetails={"DisplayName": "limits"}, SupportedMessagingContentTypes=list(limits),
        )
        conn = PARTICIPANT.create_participant_connection(Type=["CONNECTION_CREDENTIALS"], ParticipantToken=started["ParticipantToken"])
        token = conn["ConnectionCredentials"]["ConnectionToken"]
        start = dict(
            InstanceId="boto3-suite", ContactFlowId="boto3-flow",
            ParticipantDetails={"DisplayName": "limits"}, SupportedMessagingContentTypes=list(limits),
        )
        def content(content_type, length):
            # JSON types carry a JSON document: a string literal of the wanted length.
            return "a" * length if content_type.startswith("text/") else json.dumps("a" * (length - 2))

        for content_type, limit in limits.items():
            with self.subTest(content_type=content_type):
                PARTICIPANT.send_message(ContentType=content_type, Content=content(content_type, limit), ConnectionToken=token)
                expect_error(self, {"ValidationException"}, PARTICIPANT.send_message,
                             ContentType=content_type, Content=content(content_type, limit + 1), ConnectionToken=token)
        # StartChatContact's InitialMessage is held to the same limits.
        for content_type in ("text/plain", "text/markdown"):
            with self.subTest(initial_message=content_type):
                CONNECT.start_chat_contact(**start, InitialMessage={"ContentType": content_type, "Content": "a" * 1024})
                expect_error(
                    self, {"InvalidParameterException", "InvalidRequestException"}, CONNECT.start_chat_contact,
                    **start, InitialMessage={"ContentType": content_type, "Content": "a" * 1025},
                )

if __name__ == "__main__":
    unittest.main()
