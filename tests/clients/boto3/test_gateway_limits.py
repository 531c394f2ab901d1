"""The gateway refuses out-of-limit requests before any upstream call, with limits of its own
(src/api/validate.rs, src/connect/content_type.rs). Each one that the published model carries
must be the model's: this reads the Rust constants and holds them to the model. Whether the
gateway refuses at each of them is tested on the Rust side (src/api/validate.rs's tests,
tests/gateway/); the simulator's refusals by test_simulator.py."""

import os
import re
import unittest

import model

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


def rust_consts(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    consts = {}
    for name, value in re.findall(r"pub const ([A-Z_]+): (?:usize|u32) =\s*([0-9_ *]+);", text):
        product = 1
        for factor in value.split("*"):
            product *= int(factor.strip().replace("_", ""))
        consts[name] = product
    return consts


def member(service, operation, path):
    shape = model.service(service).operation_model(operation).input_shape
    for name in path.split("."):
        shape = shape.members[name]
    return shape.metadata


# The gateway's constant -> the model's member and bound it stands for.
FROM_MODEL = {
    "DISPLAY_NAME": ("connect", "StartChatContact", "ParticipantDetails.DisplayName", "max"),
    "CONTENT": ("connectparticipant", "SendMessage", "Content", "max"),
    "CLIENT_TOKEN": ("connectparticipant", "SendMessage", "ClientToken", "max"),
    "INSTANCE_ID": ("connect", "StartChatContact", "InstanceId", "max"),
    "CONTACT_FLOW_ID": ("connect", "StartChatContact", "ContactFlowId", "max"),
    "ID": ("connectparticipant", "GetTranscript", "ContactId", "max"),
    "DURATION_MIN": ("connect", "StartChatContact", "ChatDurationInMinutes", "min"),
    "DURATION_MAX": ("connect", "StartChatContact", "ChatDurationInMinutes", "max"),
    "PAGE_SIZE_MAX": ("connectparticipant", "GetTranscript", "MaxResults", "max"),
    "PAGE_TOKEN": ("connectparticipant", "GetTranscript", "NextToken", "max"),
}


class GatewayLimits(unittest.TestCase):
    def test_the_gateway_limits_are_the_model_limits(self):
        consts = rust_consts("src/api/validate.rs")
        for name, (service, operation, path, bound) in FROM_MODEL.items():
            with self.subTest(constant=name):
                self.assertIn(name, consts, "the constant is gone: update this table")
                self.assertEqual(consts[name], member(service, operation, path)[bound], f"{operation}.{path} {bound}")
        # Ids the gateway passes on are bounded as every id of the model is.
        self.assertEqual(member("connectparticipant", "GetTranscript", "StartPosition.Id")["max"], consts["ID"])
        self.assertEqual(member("connect", "StartChatContact", "PersistentChat.SourceContactId")["max"], consts["ID"])

    def test_the_model_outer_bound_of_a_message(self):
        consts = rust_consts("src/connect/content_type.rs")
        self.assertEqual(consts["MODEL_MAX_MESSAGE_CHARS"], member("connectparticipant", "SendMessage", "Content")["max"])


if __name__ == "__main__":
    unittest.main()
