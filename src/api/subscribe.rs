//! Subscribe: one stream of a chat's events — the current upstream state, what a resuming
//! subscriber missed (from the session's history, or past it from the transcript), then live
//! events from the session's fan-out until the chat ends.

use super::*;
use crate::session::backfill::read_transcript;

/// What a resuming subscriber missed beyond the session's history, from the transcript.
struct CatchUp {
    events: Vec<pb::ChatEvent>,
    keys: HashSet<String>,
    /// False when the transcript could not be read to the end.
    complete: bool,
}

impl Default for CatchUp {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            keys: HashSet::new(),
            complete: true,
        }
    }
}

impl Gateway {
    async fn catch_up(&self, session: &Session, cursor: &Cursor) -> CatchUp {
        let upstream = self.sessions.upstream();
        let start = (!cursor.durable_id.is_empty()).then_some(cursor.durable_id.as_str());
        let transcript = read_transcript(start, self.sessions.settings().backfill_max_pages, |q| {
            self.with_token(session, None, move |t| {
                let q = q.clone();
                async move { upstream.get_transcript(&t, q).await }
            })
        })
        .await;
        if let Some(e) = &transcript.error {
            tracing::info!(contact_id = %session.key(), error = %e, "transcript catch-up failed");
        }
        let mut durable = cursor.durable_id.clone();
        let mut out = CatchUp {
            complete: transcript.complete,
            ..CatchUp::default()
        };
        out.keys.insert(cursor.key.clone());
        out.keys.insert(cursor.durable_id.clone());
        for item in transcript.items {
            let key = item.dedupe_key();
            if !out.keys.insert(key.clone()) {
                continue;
            }
            let (ev, _) = crate::session::event_with_cursor(item, key, &mut durable);
            out.events.push(ev);
        }
        out
    }
}

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ChatEvent, Status>> + Send>>;

impl Gateway {
    pub(super) async fn subscribe_inner(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let principal = Principal::of(&request);
        let req = request.into_inner();
        let resume = if req.resume_cursor.is_empty() {
            // An empty cursor key replays the whole history.
            req.from_start.then(Cursor::default)
        } else {
            Some(Cursor::decode(&req.resume_cursor).ok_or_else(|| {
                ApiError::invalid(
                    "resume_cursor",
                    format!(
                        "is not a cursor this gateway issued (at most {} characters)",
                        cursor::MAX_LEN
                    ),
                )
            })?)
        };
        let record = self
            .authorize(req.chat.as_ref(), &principal, Access::Inspect)
            .await?;
        let session = self.sessions.open(&record).map_err(ApiError::from)?;
        if resume.is_some() {
            // Until the first backfill is done the history does not reach back yet.
            session.wait_ready(self.defaults.token_wait).await;
        }
        let mut catch_up = CatchUp::default();
        let sub = match session.subscribe(resume.as_ref()) {
            Err(SessionError::BadCursor) => {
                // The history no longer reaches the cursor: replay the whole history and
                // read what it lacks from the transcript, skipping what both hold.
                let sub = session
                    .subscribe(Some(&Cursor::default()))
                    .map_err(ApiError::from)?;
                if let Some(cursor) = &resume {
                    catch_up = self.catch_up(&session, cursor).await;
                }
                sub
            }
            other => other.map_err(ApiError::from)?,
        };
        let initial = pb::ChatEvent {
            cursor: sub.cursor.clone(),
            event: Some(pb::chat_event::Event::Started(pb::StreamStarted {
                upstream: sub.upstream.to_pb() as i32,
                not_recovered: !catch_up.complete,
            })),
            ..Default::default()
        };
        let keepalive = self
            .defaults
            .keepalive_interval
            .max(Duration::from_millis(10));
        let state = StreamState {
            keepalive: tokio::time::interval_at(quiet_until(keepalive), keepalive),
            initial: Some(Box::new(initial)),
            rare: Rare::boxed(
                catch_up.events.into(),
                catch_up.keys,
                req.stitch_bot_replies.then(|| Stitcher {
                    progress: req.bot_reply_progress,
                    partial: VecDeque::new(),
                }),
            ),
            backlog: sub.backlog.into(),
            live: sub.live,
            ended_before: sub.ended,
            cursor: sub.cursor,
            done: false,
            guard: sub.guard,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            Box::new(state),
            next_event,
        ))))
    }
}

/// One Subscribe stream: the current upstream state, the backlog after the resume cursor,
/// then live events until the chat ends.
struct StreamState {
    /// Ticks while the stream is quiet; reset by every event. Its period is the keepalive
    /// interval.
    keepalive: tokio::time::Interval,
    /// Boxed: it is sent once, and inline its room would stay reserved for the stream's life.
    initial: Option<Box<pb::ChatEvent>>,
    /// A catch-up's events and keys and a bot-reply stitcher, for the few streams that have
    /// one (boxed: inline, their room, 120 B, was reserved in every stream).
    rare: Option<Box<Rare>>,
    backlog: VecDeque<SharedEvent>,
    live: Listener,
    ended_before: bool,
    /// The cursor of the last event delivered, for the caller to resume from.
    cursor: String,
    done: bool,
    guard: SubscriberGuard,
}

/// What only some streams need.
struct Rare {
    /// What a transcript catch-up found, delivered first.
    catch_up: VecDeque<pb::ChatEvent>,
    /// Keys of items the catch-up delivered, skipped when the history or the socket brings
    /// them again (empty without a catch-up).
    skip: HashSet<String>,
    /// Streamed bot replies joined into whole messages, when the subscriber asked for it.
    stitch: Option<Stitcher>,
}

impl Rare {
    /// `None` when the stream needs none of it.
    fn boxed(
        catch_up: VecDeque<pb::ChatEvent>,
        skip: HashSet<String>,
        stitch: Option<Stitcher>,
    ) -> Option<Box<Self>> {
        (!catch_up.is_empty() || !skip.is_empty() || stitch.is_some()).then(|| {
            Box::new(Self {
                catch_up,
                skip,
                stitch,
            })
        })
    }
}

/// Bot replies in progress, per stream: at most this many at once (the oldest is dropped;
/// its completed item still arrives whole).
const MAX_PARTIAL_REPLIES: usize = 8;
/// The most content kept for one reply in progress (progress events stop growing past it;
/// the completed item still arrives whole).
const MAX_PARTIAL_BYTES: usize = 64 * 1024;

struct Stitcher {
    progress: bool,
    /// Item id → the content of its chunks so far.
    partial: VecDeque<(String, String)>,
}

/// What a stitching stream does with an event.
enum Stitched {
    Deliver,
    Skip,
    Instead(SharedEvent),
}

impl Stitcher {
    fn apply(&mut self, ev: &pb::ChatEvent) -> Stitched {
        let Some(pb::chat_event::Event::Message(m)) = &ev.event else {
            return Stitched::Deliver;
        };
        if m.chunk_number == 0 && m.completed {
            return Stitched::Deliver;
        }
        let at = self.partial.iter().position(|(id, _)| *id == ev.item_id);
        if m.completed {
            // Connect's last chunk holds the whole reply.
            if let Some(i) = at {
                self.partial.remove(i);
            }
            let mut whole = ev.clone();
            if let Some(pb::chat_event::Event::Message(m)) = &mut whole.event {
                m.chunk_number = 0;
            }
            return Stitched::Instead(Arc::new(whole));
        }
        let i = match at {
            Some(i) => i,
            None => {
                if self.partial.len() >= MAX_PARTIAL_REPLIES {
                    self.partial.pop_front();
                }
                self.partial.push_back((ev.item_id.clone(), String::new()));
                self.partial.len() - 1
            }
        };
        let so_far = &mut self.partial[i].1;
        if so_far.len() + m.content.len() <= MAX_PARTIAL_BYTES {
            so_far.push_str(&m.content);
        }
        if !self.progress {
            return Stitched::Skip;
        }
        let mut progress = ev.clone();
        if let Some(pb::chat_event::Event::Message(m)) = &mut progress.event {
            m.content.clone_from(so_far);
        }
        Stitched::Instead(Arc::new(progress))
    }
}

/// When a stream quiet from now on gets its keepalive: within `interval`, on a grid of a
/// third of it shared by the process's streams ([`crate::session::grid`]), so that the
/// keepalives of the streams on one HTTP/2 connection leave in one write. The gap is two
/// thirds of the interval at least and never more than the interval.
fn quiet_until(interval: Duration) -> tokio::time::Instant {
    crate::session::grid::at_or_before(tokio::time::Instant::now() + interval, interval / 3)
}

fn is_end(ev: &pb::ChatEvent) -> bool {
    matches!(ev.event, Some(pb::chat_event::Event::ChatEnded(_)))
}

fn with_cursor(mut status: Status, cursor: &str) -> Status {
    if let Ok(v) = cursor.parse() {
        status.metadata_mut().insert("resume-cursor", v);
    }
    status
}

/// The stream's next event. The state is boxed: `unfold` keeps the state beside the future
/// that owns it, so inline it would be laid out twice in every stream, for its whole life.
async fn next_event(
    mut st: Box<StreamState>,
) -> Option<(Result<pb::ChatEvent, Status>, Box<StreamState>)> {
    if st.done {
        return None;
    }
    if let Some(ev) = st.initial.take() {
        return Some((Ok(*ev), st));
    }
    if let Some(ev) = st.rare.as_mut().and_then(|r| r.catch_up.pop_front()) {
        st.cursor.clone_from(&ev.cursor);
        return Some((Ok(ev), st));
    }
    let next = loop {
        let ev = loop {
            let ev = match st.backlog.pop_front() {
                Some(ev) => ev,
                None if st.ended_before => return None,
                None => match tokio::select! {
                    // Live events first: a keepalive is only for a stream with none, and the
                    // order spares the keepalive's timer a poll for every event.
                    biased;
                    r = st.live.recv() => r,
                    _ = st.keepalive.tick() => {
                        st.keepalive.reset_at(quiet_until(st.keepalive.period()));
                        let ev = pb::ChatEvent {
                            cursor: st.cursor.clone(),
                            event: Some(pb::chat_event::Event::Keepalive(pb::Keepalive {})),
                            ..Default::default()
                        };
                        return Some((Ok(ev), st));
                    }
                } {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(missed)) => {
                        st.done = true;
                        st.guard.session().metrics.slow_subscribers_ended.inc();
                        let msg = format!(
                            "this subscriber fell {missed} events behind and was ended; \
                     subscribe again with resume_cursor {}",
                            st.cursor
                        );
                        let status = with_cursor(Status::resource_exhausted(msg), &st.cursor);
                        return Some((Err(status), st));
                    }
                    Err(RecvError::Closed) => {
                        st.done = true;
                        if st.guard.session().is_ended() {
                            return None;
                        }
                        let status = with_cursor(
                    Status::unavailable(format!(
                        "the gateway closed this chat's session; subscribe again with resume_cursor {}",
                        st.cursor
                    )),
                    &st.cursor,
                );
                        return Some((Err(status), st));
                    }
                },
            };
            let skip = match &st.rare {
                Some(r) if !r.skip.is_empty() && !ev.item_id.is_empty() => &r.skip,
                _ => break ev,
            };
            match Cursor::decode(&ev.cursor) {
                Some(c) if skip.contains(&c.key) => continue,
                _ => break ev,
            }
        };
        match st
            .rare
            .as_mut()
            .and_then(|r| r.stitch.as_mut())
            .map(|s| s.apply(&ev))
        {
            None | Some(Stitched::Deliver) => break ev,
            Some(Stitched::Skip) => continue,
            Some(Stitched::Instead(e)) => break e,
        }
    };
    st.keepalive.reset_at(quiet_until(st.keepalive.period()));
    st.guard.session().metrics.events_delivered.inc();
    if !next.cursor.is_empty() {
        st.cursor.clone_from(&next.cursor);
    }
    if is_end(&next) {
        st.done = true;
    }
    // The last subscriber to read an event holds it alone (the fan-out lets go of what every
    // subscriber has read, and the history keeps its own encoded copy): it takes the event
    // instead of copying it.
    Some((Ok(Arc::unwrap_or_clone(next)), st))
}
