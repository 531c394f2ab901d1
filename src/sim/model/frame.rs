//! The `aws/chat` socket frame of an item, in one pass: the item's JSON written directly as
//! the body of the frame's `content` string, each of its strings escaped twice only where it
//! needs escaping at all.
//!
//! Serialising the item and then escaping that text as a string took two passes over every
//! byte, about a quarter of the simulator's instructions per message pushed (serde_json's
//! string writer and the escape). Most of an item's bytes are plain (ids, names, times, the
//! bench's messages): they are copied once, eight bytes at a time while scanning.

use serde_json::Value;

use crate::connect::json::{escape_into, is_plain};

/// Appends the JSON text of `v` as the body of a JSON string literal: what
/// `escape_into(out, &serde_json::to_string(v)?)` appends, without the intermediate text.
pub fn escaped_json_into(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // A number's text holds nothing that needs escaping; serde_json writes it.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => escaped_string_into(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                escaped_json_into(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                escaped_string_into(out, key);
                out.push(':');
                escaped_json_into(out, value);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal of `s`, escaped again as a string body: `\"` `s` `\"` when `s` is
/// plain, the general two steps when it is not.
fn escaped_string_into(out: &mut String, s: &str) {
    out.push_str("\\\"");
    if is_plain(s) {
        out.push_str(s);
    } else {
        let literal = serde_json::to_string(s).unwrap_or_default();
        escape_into(out, &literal[1..literal.len() - 1]);
    }
    out.push_str("\\\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let text = r"[a-z\x00-\x1f\\\x22\x7f/ ]{0,12}|\PC{0,12}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn writes_what_serialising_then_escaping_writes(v in value()) {
            let mut one_pass = String::from("head:");
            escaped_json_into(&mut one_pass, &v);
            let mut two_passes = String::from("head:");
            escape_into(&mut two_passes, &serde_json::to_string(&v).unwrap());
            prop_assert_eq!(one_pass, two_passes);
        }
    }

    #[test]
    fn an_item_frame_reads_back_as_the_item() {
        let item = serde_json::json!({
            "Type": "MESSAGE",
            "Content": "say \"hi\"\n\\ \u{1} é",
            "Id": "a-1",
            "Nested": {"List": [1, 2.5, null, true, "x"]},
        });
        let mut frame = String::from("{\"content\":\"");
        escaped_json_into(&mut frame, &item);
        frame.push_str("\"}");
        let outer: Value = serde_json::from_str(&frame).unwrap();
        let inner: Value = serde_json::from_str(outer["content"].as_str().unwrap()).unwrap();
        assert_eq!(inner, item);
    }
}
