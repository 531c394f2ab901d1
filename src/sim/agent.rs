//! The scripted agent: one task per chat, owning every timer of that chat (join, replies,
//! periodic messages, the chat-duration limit). It reacts to customer messages sent to it over
//! a bounded channel and stops when the chat ends or the simulator shuts down.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::model::chat::{AgentEvent, AgentInbox, Chat, EndReason};
use super::model::registry::Shared;
use super::model::time::now_ms;
use crate::connect::content_type as ct;

/// Start the agent task of a new chat, tracked by the simulator's task tracker (the
/// registry's [`SpawnAgent`](super::model::registry::SpawnAgent)).
pub fn spawn(shared: Arc<Shared>, chat: Arc<Chat>, rx: AgentInbox) {
    let tasks = shared.tasks.clone();
    tasks.spawn(Agent::new(shared, chat).run(rx));
}

struct Reply {
    at: Instant,
    text: String,
    end_after: bool,
}

struct Agent {
    shared: Arc<Shared>,
    chat: Arc<Chat>,
    joined: bool,
    /// Customer messages that arrived before the agent joined.
    backlog: VecDeque<(String, String)>,
    /// Replies waiting for their time, in time order (the reply delay is constant).
    replies: VecDeque<Reply>,
    next_tick: Option<Instant>,
}

impl Agent {
    fn new(shared: Arc<Shared>, chat: Arc<Chat>) -> Self {
        Agent {
            shared,
            chat,
            joined: false,
            backlog: VecDeque::new(),
            replies: VecDeque::new(),
            next_tick: None,
        }
    }

    async fn run(mut self, mut rx: AgentInbox) {
        let start = Instant::now();
        let join_at = start + self.shared.config.agent.join_delay;
        let end_at = start.checked_add(self.chat.duration);
        let stop = self.chat.agent_stop.clone();
        loop {
            let mut next = end_at;
            let mut consider = |t: Option<Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            };
            consider((!self.joined).then_some(join_at));
            consider(self.replies.front().map(|r| r.at));
            consider(self.next_tick);
            let wake = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => match ev {
                    Some(AgentEvent::CustomerMessage { id, content }) => {
                        if self.joined {
                            self.react(&id, &content);
                        } else if self.backlog.len() < self.shared.config.agent_queue {
                            self.backlog.push_back((id, content));
                        }
                    }
                    None => return,
                },
                _ = wake => {}
            }
            let now = Instant::now();
            if !self.joined && now >= join_at && !self.join(now) {
                return;
            }
            while self.replies.front().is_some_and(|r| r.at <= now) {
                let Some(reply) = self.replies.pop_front() else {
                    break;
                };
                if !self.say(&reply.text) {
                    return;
                }
                if reply.end_after {
                    self.shared.end_chat(&self.chat, EndReason::Agent);
                    return;
                }
            }
            if let (Some(tick), Some(every)) =
                (self.next_tick, self.shared.config.agent.message_interval)
            {
                if tick <= now {
                    let n = {
                        let mut st = self.chat.lock();
                        st.agent_messages += 1;
                        st.agent_messages
                    };
                    if !self.say(&format!("Agent message {n}")) {
                        return;
                    }
                    // Keep the rate without drift, but do not burst after a stall.
                    let next = tick + every;
                    self.next_tick = Some(if next <= now { now + every } else { next });
                }
            }
            if end_at.is_some_and(|t| t <= now) {
                self.shared.end_chat(&self.chat, EndReason::Expired);
                return;
            }
            if self.chat.is_ended() {
                return;
            }
        }
    }

    /// Push the agent's join event; false when the chat has already ended.
    fn join(&mut self, now: Instant) -> bool {
        let joined = self
            .chat
            .event(ct::PARTICIPANT_JOINED, Some(&self.chat.agent));
        if self.shared.push(&self.chat, joined, true).is_none() {
            return false;
        }
        self.joined = true;
        let cfg = &self.shared.config.agent;
        self.next_tick = cfg
            .message_interval
            .filter(|_| !cfg.silent)
            .map(|every| now + every);
        while let Some((id, content)) = self.backlog.pop_front() {
            self.react(&id, &content);
        }
        true
    }

    /// Receipts and typing now, the reply later.
    fn react(&mut self, message_id: &str, content: &str) {
        let cfg = &self.shared.config.agent;
        if cfg.silent {
            return;
        }
        let chat = &self.chat;
        if cfg.receipts {
            let now = now_ms();
            for read in [false, true] {
                let receipt = chat.receipt(read, message_id, &chat.agent, now);
                if self.shared.push(chat, receipt, false).is_none() {
                    return;
                }
            }
        }
        if cfg.typing {
            let typing = chat.item("TYPING", ct::TYPING, None, Some(&chat.agent));
            if self.shared.push(chat, typing, false).is_none() {
                return;
            }
        }
        if self.replies.len() >= self.shared.config.agent_queue {
            tracing::warn!(contact_id = %chat.contact_id, "agent reply queue full; reply dropped");
            return;
        }
        self.replies.push_back(Reply {
            at: Instant::now() + cfg.reply_delay,
            text: format!("{}{}", cfg.reply_prefix, content),
            end_after: content.trim().eq_ignore_ascii_case(cfg.end_keyword.trim()),
        });
    }

    /// Push an agent text message; false when the chat has ended.
    fn say(&self, text: &str) -> bool {
        let msg = self.chat.item(
            "MESSAGE",
            ct::TEXT_PLAIN,
            Some(text),
            Some(&self.chat.agent),
        );
        self.shared.push(&self.chat, msg, true).is_some()
    }
}
