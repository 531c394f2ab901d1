//! The participant WebSocket protocol: the frames the gateway sends (subscribe, heartbeat,
//! deep heartbeat) and the parsing of what Connect pushes. Parsing is pure and total: a
//! hostile or malformed frame becomes [`Inbound::Malformed`], never a panic.

use crate::connect::item::Item;
use crate::ops::metrics::Metrics;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Counts (`malformed_frames_total`) and logs, at warn and without its content, a frame the
/// session could not use.
pub fn note_rejected(metrics: &Metrics, what: &'static str, reason: &str) {
    metrics.malformed_frames.inc();
    tracing::warn!(what, reason, "rejected upstream frame");
}

/// Counts and logs a socket read error that rejected a frame (one over the size cap).
pub fn note_read_error(metrics: &Metrics, e: &tokio_tungstenite::tungstenite::Error) {
    use tokio_tungstenite::tungstenite::Error;
    if let Error::Capacity(c) = e {
        note_rejected(metrics, "oversized", &c.to_string());
    }
}

pub const SUBSCRIBE: &str = r#"{"topic":"aws/subscribe","content":{"topics":["aws/chat"]}}"#;
pub const HEARTBEAT: &str = r#"{"topic":"aws/heartbeat"}"#;
pub const PING: &str = r#"{"topic":"aws/ping"}"#;

/// What a frame from Connect means to the session.
#[derive(Debug)]
pub enum Inbound {
    /// The answer to our subscribe: `ok` when its status was "success".
    SubscribeAck {
        ok: bool,
    },
    Heartbeat,
    /// The deep heartbeat's answer with its status code.
    Ping {
        status: u16,
    },
    /// A chat item.
    Chat(Box<Item>),
    /// A frame with no topic and a `message`: the service reports an error (e.g. Forbidden).
    Error(String),
    /// A well-formed frame on a topic the gateway does not know.
    Unknown(String),
    /// A frame that is not what the protocol says; the reason, for counting and logs.
    Malformed(String),
}

/// A frame's envelope. Strings are borrowed from the frame where they have no escapes, and
/// `content` is kept as raw JSON: only an `aws/chat` frame's content is decoded, once.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(rename = "statusCode")]
    status_code: Option<u16>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// The subscribe answer's content.
#[derive(Deserialize)]
struct SubscribeAnswer<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Inbound {
    let frame: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return Inbound::Malformed(format!(
                "not a JSON frame: {}",
                crate::connect::item::json_error(&e)
            ))
        }
    };
    match frame.topic.as_deref() {
        Some("aws/subscribe") => {
            let ok = frame
                .content
                .and_then(|c| serde_json::from_str::<SubscribeAnswer>(c.get()).ok())
                .and_then(|a| a.status)
                .as_deref()
                == Some("success");
            Inbound::SubscribeAck { ok }
        }
        Some("aws/heartbeat") => Inbound::Heartbeat,
        Some("aws/ping") => Inbound::Ping {
            status: frame.status_code.unwrap_or(0),
        },
        Some("aws/chat") => match frame.content.and_then(|c| string_literal(c.get())) {
            Some(s) => match Item::parse(s) {
                Ok(item) => Inbound::Chat(Box::new(item)),
                Err(e) => Inbound::Malformed(e.to_string()),
            },
            None => Inbound::Malformed("aws/chat frame without string content".into()),
        },
        Some(other) => Inbound::Unknown(other.chars().take(64).collect()),
        None => match frame.message {
            Some(m) => Inbound::Error(m.chars().take(256).collect()),
            None => Inbound::Malformed("frame without topic".into()),
        },
    }
}

/// The text of `literal` when it is a JSON string literal, `None` when it is another JSON
/// value. The parser that produced `literal` has validated it. An item's JSON arrives escaped
/// inside the frame (every quote of it is `\"`), and serde_json's string decoding pays per
/// escape; the short escapes are decoded here, and a literal with a `\u` escape goes through
/// serde_json.
fn string_literal(literal: &str) -> Option<String> {
    let body = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        out.push(match rest.as_bytes().get(i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            // `\u` (and nothing else a parser accepts).
            _ => return serde_json::from_str(literal).ok(),
        });
        // The escape is two ASCII bytes, so this is a character boundary.
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_frames() {
        assert!(matches!(
            parse(
                r#"{"topic":"aws/subscribe","content":{"status":"success","topics":["aws/chat"]}}"#
            ),
            Inbound::SubscribeAck { ok: true }
        ));
        assert!(matches!(
            parse(r#"{"topic":"aws/subscribe","content":{"status":"failure"}}"#),
            Inbound::SubscribeAck { ok: false }
        ));
        assert!(matches!(parse(HEARTBEAT), Inbound::Heartbeat));
        assert!(matches!(
            parse(r#"{"topic":"aws/ping","statusCode":200,"statusContent":"OK"}"#),
            Inbound::Ping { status: 200 }
        ));
        assert!(
            matches!(parse(r#"{"message":"Forbidden"}"#), Inbound::Error(m) if m == "Forbidden")
        );
        let chat = r#"{"topic":"aws/chat","contentType":"application/json","content":"{\"Id\":\"i1\",\"Type\":\"MESSAGE\"}"}"#;
        assert!(matches!(parse(chat), Inbound::Chat(i) if i.id.as_deref() == Some("i1")));
    }

    #[test]
    fn string_content_decodes_as_serde_json_does() {
        for text in [
            "",
            "plain",
            r#"{"Id":"i1","Content":"say \"hi\""}"#,
            "back\\slash \\u0041 not an escape",
            "a\\b \\\\ c",
            "line\nbreak\ttab\r\u{8}\u{c}/",
            "caf\u{e9} \u{1f600} \u{7f} \u{1}",
        ] {
            let literal = serde_json::to_string(text).unwrap();
            assert_eq!(string_literal(&literal).as_deref(), Some(text), "{literal}");
        }
        // Escapes a serializer may choose: \/ and \u, surrogate pairs included.
        for (literal, text) in [
            (r#""a\/b""#, "a/b"),
            (r#""\u00e9\ud83d\ude00\\u""#, "\u{e9}\u{1f600}\\u"),
        ] {
            assert_eq!(string_literal(literal).as_deref(), Some(text), "{literal}");
        }
        for not_a_string in ["{}", "[]", "1", "null", "true"] {
            assert_eq!(string_literal(not_a_string), None);
        }
    }

    #[test]
    fn hostile_frames_are_malformed() {
        for bad in [
            "",
            "nonsense",
            "[1,2]",
            "{}",
            r#"{"topic":"aws/chat","content":{"Id":"x"}}"#,
            r#"{"topic":"aws/chat","content":"not json"}"#,
            r#"{"topic":"aws/chat","content":"{}"}"#,
            r#"{"topic":5}"#,
        ] {
            assert!(matches!(parse(bad), Inbound::Malformed(_)), "{bad}");
        }
        assert!(matches!(parse(r#"{"topic":"aws/new"}"#), Inbound::Unknown(t) if t == "aws/new"));
    }
}
