//! GetTranscript: the request's StartPosition, ScanDirection, SortOrder and NextToken read
//! into a cursor over the chat's items (the paging itself is [`crate::sim::model::transcript`]);
//! a persistent chat may read the contacts it continues.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::{bearer, check_len, optional, parse, run, ApiError};
use crate::sim::model::chat::Chat;
use crate::sim::model::operation::Operation;
use crate::sim::model::registry::Shared;
use crate::sim::model::time::parse_time_ms;
use crate::sim::model::transcript::{self, Direction, Order, Start};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartPosition {
    id: Option<String>,
    absolute_time: Option<String>,
    most_recent: Option<i64>,
}

impl StartPosition {
    /// `"StartPosition": {}`, which ChatJS sends when its caller names no start: Connect
    /// treats it as no start given.
    fn is_empty(&self) -> bool {
        self.id.is_none() && self.absolute_time.is_none() && self.most_recent.is_none()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetTranscriptRequest {
    contact_id: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    scan_direction: Option<String>,
    sort_order: Option<String>,
    start_position: Option<StartPosition>,
}

pub(super) async fn get_transcript(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, Operation::GetTranscript, || {
        let chat = shared.authorize(bearer(&headers))?;
        let req: GetTranscriptRequest = parse(&body, ApiError::validation)?;
        optional("ContactId", &req.contact_id, 1, 256).map_err(ApiError::validation)?;
        // A persistent chat reads the transcripts of the contacts it continues.
        let target = match req.contact_id.as_deref() {
            Some(id) if id != chat.contact_id => {
                shared.chat_in_chain(&chat, id).ok_or_else(|| {
                    ApiError::access_denied("ContactId is not part of this participant's chat")
                })?
            }
            _ => chat,
        };
        transcript_page(&target, &req)
    })
}

/// A page of `chat`'s transcript (the participant's own chat, or one it continues).
fn transcript_page(chat: &Chat, req: &GetTranscriptRequest) -> Result<Value, ApiError> {
    let v = ApiError::validation;
    let max = req.max_results.unwrap_or(10);
    if !(0..=100).contains(&max) {
        return Err(v("MaxResults must be between 0 and 100".into()));
    }
    let explicit = match req.scan_direction.as_deref() {
        None => None,
        Some("FORWARD") => Some(Direction::Forward),
        Some("BACKWARD") => Some(Direction::Backward),
        Some(other) => {
            return Err(v(format!(
                "ScanDirection must be FORWARD or BACKWARD, not {other:?}"
            )))
        }
    };
    let order = match req.sort_order.as_deref() {
        None | Some("DESCENDING") => Order::Descending,
        Some("ASCENDING") => Order::Ascending,
        Some(other) => {
            return Err(v(format!(
                "SortOrder must be ASCENDING or DESCENDING, not {other:?}"
            )))
        }
    };
    let st = chat.lock();
    let (direction, start) = if let Some(token) = &req.next_token {
        check_len("NextToken", token, 1, 1000).map_err(v)?;
        let cursor = transcript::decode_token(&chat.contact_id, token)
            .ok_or_else(|| v("NextToken is invalid".into()))?;
        if explicit.is_some_and(|d| d != cursor.direction) {
            return Err(v("NextToken was issued for the other ScanDirection".into()));
        }
        (cursor.direction, Start::Cursor(cursor))
    } else if let Some(sp) = req.start_position.as_ref().filter(|sp| !sp.is_empty()) {
        let set = usize::from(sp.id.is_some())
            + usize::from(sp.absolute_time.is_some())
            + usize::from(sp.most_recent.is_some());
        if set != 1 {
            return Err(v(
                "StartPosition must have exactly one of Id, AbsoluteTime, MostRecent".into(),
            ));
        }
        let start =
            if let Some(id) = &sp.id {
                check_len("StartPosition.Id", id, 1, 256).map_err(v)?;
                Start::Seq(st.seq_of(id).ok_or_else(|| {
                    v("StartPosition.Id does not match an item of this chat".into())
                })?)
            } else if let Some(t) = &sp.absolute_time {
                check_len("StartPosition.AbsoluteTime", t, 1, 100).map_err(v)?;
                Start::Time(parse_time_ms(t).ok_or_else(|| {
                    v("StartPosition.AbsoluteTime must look like 2019-11-08T02:41:28.172Z".into())
                })?)
            } else {
                let n = sp.most_recent.unwrap_or(0);
                if !(0..=100).contains(&n) {
                    return Err(v(
                        "StartPosition.MostRecent must be between 0 and 100".into()
                    ));
                }
                Start::MostRecent(usize::try_from(n).unwrap_or(0))
            };
        (explicit.unwrap_or(Direction::Forward), start)
    } else {
        (explicit.unwrap_or(Direction::Backward), Start::Edge)
    };
    let page = transcript::page(
        &st.items,
        direction,
        start,
        usize::try_from(max).unwrap_or(0),
        order,
    );
    let items: Vec<Value> = page
        .indices
        .iter()
        .map(|i| (*st.items[*i].value).clone())
        .collect();
    let mut out = json!({ "InitialContactId": chat.contact_id, "Transcript": items });
    if let Some(next) = page.next {
        out["NextToken"] = Value::String(transcript::encode_token(&chat.contact_id, next));
    }
    Ok(out)
}
