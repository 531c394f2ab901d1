//! connect-chat: a terminal client for the gateway, to chat with an agent from a shell.
//!
//! It starts a chat (or resumes one from `--resume CONTACT_ID:CHAT_TOKEN`), follows its
//! Subscribe stream and prints what happens, and sends every line typed as a message.
//! A lost stream is resumed from the last cursor, so nothing is missed or shown twice.

use clap::Parser;
use connect_chat_gateway::pb::{self, chat_event::Event, chat_gateway_client::ChatGatewayClient};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Chat with an Amazon Connect agent through connect-chat-gateway.
///
/// Type a line and Enter to send it. Commands: /typing, /transcript, /end, /help.
/// End of input (Ctrl-D) ends the chat; Ctrl-C leaves it open to resume later.
#[derive(Parser, Debug)]
#[command(name = "connect-chat", version, about, long_about)]
struct Args {
    /// The gateway's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway: String,

    /// Your name as the agent sees it (for a new chat).
    #[arg(long, default_value = "Ada")]
    name: String,

    /// Resume a chat started earlier instead of starting one.
    #[arg(long, value_name = "CONTACT_ID:CHAT_TOKEN")]
    resume: Option<String>,
}

type Client = ChatGatewayClient<Channel>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long `/end` and end of input wait for the stream to confirm that the chat ended.
const END_WAIT: Duration = Duration::from_secs(10);
/// Consecutive failed resubscriptions before giving up on the stream.
const MAX_RETRIES: u32 = 20;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-chat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The chat this client is in.
#[derive(Clone, Debug)]
struct Chat {
    chat: pb::ChatRef,
    /// Our own participant id: our typing and receipts are not shown back to us.
    me: String,
}

async fn run(args: Args) -> Result<(), BoxError> {
    let channel = Channel::from_shared(args.gateway.clone())
        .map_err(|e| format!("--gateway {}: {e}", args.gateway))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the gateway at {}: {}",
                args.gateway,
                chain(&e)
            )
        })?;
    let mut client = ChatGatewayClient::new(channel);
    let out = Printer::new();

    let chat = match &args.resume {
        Some(resume) => resume_chat(&mut client, resume).await?,
        None => {
            let started = client
                .start_chat(pb::StartChatRequest {
                    display_name: args.name.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| describe("cannot start a chat", &s))?
                .into_inner();
            Chat {
                chat: pb::ChatRef {
                    contact_id: started.contact_id,
                    chat_token: started.chat_token,
                },
                me: started.participant_id,
            }
        }
    };
    out.line(&format!(
        "chat {} — to come back to it later: connect-chat --resume {}:{}",
        chat.chat.contact_id, chat.chat.contact_id, chat.chat.chat_token
    ));
    out.line("type a message and Enter; /help lists the commands; Ctrl-D ends the chat");

    let mut follower = tokio::spawn(follow(client.clone(), chat.clone(), out.clone()));
    let mut lines = stdin_lines();
    loop {
        let line = tokio::select! {
            done = &mut follower => {
                let done = finished(done);
                if done.is_err() {
                    out.line(&format!(
                        "the chat may still be open; resume it with: connect-chat --resume {}:{}",
                        chat.chat.contact_id, chat.chat.chat_token
                    ));
                }
                return done;
            }
            _ = tokio::signal::ctrl_c() => {
                out.line(&format!(
                    "left the chat open; resume it with: connect-chat --resume {}:{}",
                    chat.chat.contact_id, chat.chat.chat_token
                ));
                return Ok(());
            }
            line = lines.recv() => line,
        };
        let Some(line) = line else {
            // End of input (or unreadable input) ends the chat.
            return end_chat(&mut client, &chat, &out, follower).await;
        };
        let line = line.trim();
        match line {
            "" => {}
            "/end" | "/quit" => return end_chat(&mut client, &chat, &out, follower).await,
            "/typing" => {
                let sent = client
                    .send_event(pb::SendEventRequest {
                        chat: Some(chat.chat.clone()),
                        r#type: pb::EventType::Typing as i32,
                        ..Default::default()
                    })
                    .await;
                if let Err(s) = sent {
                    out.line(&format!("[{}]", describe("typing not sent", &s)));
                }
            }
            "/transcript" => {
                if let Err(s) = transcript(&mut client, &chat, &out).await {
                    out.line(&format!("[{}]", describe("cannot read the transcript", &s)));
                }
            }
            "/help" => out.line(HELP),
            _ if line.starts_with('/') && !line.starts_with("//") => {
                out.line(&format!("unknown command {line}\n{HELP}"))
            }
            text => {
                // A leading "//" sends a message that starts with "/".
                let text = text
                    .strip_prefix('/')
                    .filter(|t| t.starts_with('/'))
                    .unwrap_or(text);
                let sent = client
                    .send_message(pb::SendMessageRequest {
                        chat: Some(chat.chat.clone()),
                        content: text.to_string(),
                        ..Default::default()
                    })
                    .await;
                match sent {
                    Ok(_) => {} // the message comes back on the stream, in order
                    Err(s) if s.code() == Code::FailedPrecondition => {
                        out.line("[the chat has ended]");
                        return Ok(());
                    }
                    Err(s) => out.line(&format!("[{}]", describe("not sent", &s))),
                }
            }
        }
    }
}

/// Lines of standard input, read on a thread of their own: a blocking read there does not
/// hold up the process's exit as one on the runtime's blocking pool would (Ctrl-C would wait
/// for the next Enter). The channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

const HELP: &str = "\
  any text     send it as a message (start with // to send a line beginning with /)
  /typing      tell the agent you are typing
  /transcript  show the chat's transcript
  /end         end the chat (so does Ctrl-D); Ctrl-C leaves it open to resume later
  /help        this list";

async fn resume_chat(client: &mut Client, resume: &str) -> Result<Chat, BoxError> {
    let (contact_id, chat_token) = resume
        .split_once(':')
        .filter(|(c, t)| !c.is_empty() && !t.is_empty())
        .ok_or("--resume takes CONTACT_ID:CHAT_TOKEN, as printed when the chat started")?;
    let chat = pb::ChatRef {
        contact_id: contact_id.into(),
        chat_token: chat_token.into(),
    };
    let state = client
        .get_chat(pb::GetChatRequest {
            chat: Some(chat.clone()),
        })
        .await
        .map_err(|s| describe("cannot resume the chat", &s))?
        .into_inner();
    if state.state == pb::ChatState::Ended as i32 {
        return Err("that chat has ended".into());
    }
    Ok(Chat {
        chat,
        me: state.participant_id,
    })
}

/// Ends the chat and waits (a little) for the stream to confirm it.
async fn end_chat(
    client: &mut Client,
    chat: &Chat,
    out: &Printer,
    follower: tokio::task::JoinHandle<Result<(), String>>,
) -> Result<(), BoxError> {
    let ended = client
        .end_chat(pb::EndChatRequest {
            chat: Some(chat.chat.clone()),
        })
        .await;
    match ended {
        Ok(_) => {}
        // Already over: nothing left to end.
        Err(s) if s.code() == Code::FailedPrecondition => {}
        Err(s) => {
            follower.abort();
            return Err(describe("cannot end the chat", &s).into());
        }
    }
    match tokio::time::timeout(END_WAIT, follower).await {
        Ok(done) => finished(done),
        Err(_) => {
            out.line("— the chat has ended —");
            Ok(())
        }
    }
}

fn finished(done: Result<Result<(), String>, tokio::task::JoinError>) -> Result<(), BoxError> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(format!("the stream reader failed: {e}").into()),
    }
}

/// Follows the chat's events until it ends, resuming a lost stream from the last cursor.
/// Returns when the chat ended, or with an error when the stream cannot be had back.
async fn follow(mut client: Client, chat: Chat, out: Printer) -> Result<(), String> {
    let mut cursor = String::new();
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let opened = client
            .subscribe(pb::SubscribeRequest {
                chat: Some(chat.chat.clone()),
                resume_cursor: cursor.clone(),
            })
            .await;
        let status = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            failures = 0;
                            if !ev.cursor.is_empty() {
                                cursor.clone_from(&ev.cursor);
                            }
                            if let Some(Event::Started(s)) = &ev.event {
                                out.started(s, first);
                                first = false;
                                continue;
                            }
                            if out.event(&ev, &chat.me) {
                                return Ok(());
                            }
                        }
                        // The stream ends with OK once the chat has ended.
                        Ok(None) => {
                            out.line("— the chat has ended —");
                            return Ok(());
                        }
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        match status.code() {
            Code::FailedPrecondition => {
                out.line("— the chat has ended —");
                return Ok(());
            }
            Code::NotFound | Code::PermissionDenied | Code::Unauthenticated => {
                return Err(describe("the chat cannot be followed", &status));
            }
            Code::OutOfRange | Code::InvalidArgument if !cursor.is_empty() => {
                out.line("[the gateway no longer reaches back to our last event; /transcript shows what may be missing]");
                cursor.clear();
                continue;
            }
            _ => {}
        }
        failures += 1;
        if failures > MAX_RETRIES {
            return Err(describe("lost the chat's stream", &status));
        }
        let delay =
            Duration::from_millis(250 * (1u64 << failures.min(5))).min(Duration::from_secs(5));
        out.line(&format!(
            "[{}; resuming in {} ms]",
            describe("stream lost", &status),
            delay.as_millis()
        ));
        tokio::time::sleep(delay).await;
    }
}

/// Prints the whole transcript, oldest first.
async fn transcript(client: &mut Client, chat: &Chat, out: &Printer) -> Result<(), Status> {
    // Pages come newest first (each sorted oldest first); read up to 20 of them.
    let mut pages = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let page = client
            .get_transcript(pb::GetTranscriptRequest {
                chat: Some(chat.chat.clone()),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        pages.push(page.events);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    out.line("--- transcript ---");
    for event in pages.into_iter().rev().flatten() {
        if let Some(text) = render(&event, &chat.me) {
            out.line(&text);
        }
    }
    out.line("--- end of transcript ---");
    Ok(())
}

/// An error with its causes, in one line ("transport error: ...: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A status in one line for a person: what failed, the code and the gateway's message.
fn describe(what: &str, status: &Status) -> String {
    // A stream's end names the resume cursor, which this client tracks itself.
    let message = status.message();
    let message = message.split("; subscribe again").next().unwrap_or(message);
    format!("{what}: {:?}: {message}", status.code())
}

/// Terminal output. A "typing" notice is a transient line that the next output replaces.
#[derive(Clone)]
struct Printer {
    inner: Arc<Mutex<PrinterState>>,
}

struct PrinterState {
    tty: bool,
    transient: bool,
}

impl Printer {
    fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(PrinterState {
                tty: std::io::stdout().is_terminal(),
                transient: false,
            })),
        }
    }

    fn line(&self, text: &str) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut stdout = std::io::stdout().lock();
        if st.transient {
            let _ = write!(stdout, "\r\x1b[2K");
            st.transient = false;
        }
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    /// Shown until the next line; on a pipe, a plain line.
    fn transient(&self, text: &str) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut stdout = std::io::stdout().lock();
        if st.tty {
            let _ = write!(stdout, "\r\x1b[2K{text}");
            st.transient = true;
        } else {
            let _ = writeln!(stdout, "{text}");
        }
        let _ = stdout.flush();
    }

    fn started(&self, started: &pb::StreamStarted, first: bool) {
        if !first {
            self.line("[stream resumed]");
        }
        if started.upstream == pb::UpstreamState::Reconnecting as i32 {
            self.line(if first {
                "[connecting to Amazon Connect…]"
            } else {
                "[the gateway is reconnecting to Amazon Connect…]"
            });
        }
        if started.not_recovered {
            self.line("[some events may be missing: /transcript shows the whole chat]");
        }
    }

    /// Prints one event; true when it says the chat has ended.
    fn event(&self, ev: &pb::ChatEvent, me: &str) -> bool {
        let sender = ev.sender.as_ref();
        let mine = sender.is_some_and(|s| !me.is_empty() && s.participant_id == me);
        match &ev.event {
            Some(Event::Keepalive(_)) | Some(Event::Started(_)) | None => {}
            Some(Event::Typing(_)) => {
                if !mine {
                    self.transient(&format!("{} is typing…", name(sender)));
                }
            }
            // Our own receipts are not news to us.
            Some(Event::Delivered(_)) | Some(Event::Read(_)) if mine => {}
            Some(Event::ChatEnded(_)) => {
                self.line("— the chat has ended —");
                return true;
            }
            Some(_) => {
                if let Some(text) = render(ev, me) {
                    self.line(&text);
                }
            }
        }
        false
    }
}

/// One event as a line of text (None for events not worth a line).
fn render(ev: &pb::ChatEvent, me: &str) -> Option<String> {
    let sender = ev.sender.as_ref();
    let who = name(sender);
    let at = clock(ev.time.as_ref());
    let role = sender.map(|s| role(s.role)).unwrap_or("");
    let you = sender.is_some_and(|s| !me.is_empty() && s.participant_id == me);
    let text = match ev.event.as_ref()? {
        Event::Message(m) => {
            let tag = match m.content_type.as_str() {
                "" | "text/plain" | "text/markdown" => String::new(),
                other => format!("[{other}] "),
            };
            let by = if you {
                format!("{who} (you)")
            } else if role.is_empty() {
                who
            } else {
                format!("{who} ({role})")
            };
            format!("{at} {by}: {tag}{}", m.content)
        }
        Event::Typing(_) => format!("{at} {who} is typing"),
        Event::ParticipantJoined(_) => format!("{at} → {who} joined{}", paren(role)),
        Event::ParticipantLeft(_) => format!("{at} ← {who} left"),
        Event::ParticipantIdle(_) => format!("{at} {who} is idle"),
        Event::ParticipantReturned(_) => format!("{at} {who} is back"),
        Event::Delivered(_) => format!("{at}   ✓ delivered to {who}"),
        Event::Read(_) => format!("{at}   ✓✓ read by {who}"),
        Event::Attachment(a) => format!(
            "{at} {who} sent an attachment: {} ({}, {})",
            a.name, a.content_type, a.status
        ),
        Event::Transfer(t) => format!(
            "{at} [transfer {}]",
            if t.succeeded { "succeeded" } else { "failed" }
        ),
        Event::ChatEnded(_) => format!("{at} — the chat has ended —"),
        Event::Raw(r) => format!("{at} [{} {}] {}", r.r#type, r.content_type, r.content),
        Event::Upstream(u) => {
            if u.state == pb::UpstreamState::Reconnecting as i32 {
                "[connection to Amazon Connect lost; the gateway is reconnecting…]".into()
            } else {
                "[connected to Amazon Connect]".into()
            }
        }
        Event::Started(_) | Event::Keepalive(_) => return None,
    };
    Some(text)
}

fn name(sender: Option<&pb::Participant>) -> String {
    match sender {
        Some(s) if !s.display_name.is_empty() => s.display_name.clone(),
        Some(s) if !role(s.role).is_empty() => {
            let mut r = role(s.role).to_string();
            r[..1].make_ascii_uppercase();
            r
        }
        _ => "someone".into(),
    }
}

fn role(role: i32) -> &'static str {
    match pb::ParticipantRole::try_from(role) {
        Ok(pb::ParticipantRole::Agent) => "agent",
        Ok(pb::ParticipantRole::Customer) => "customer",
        Ok(pb::ParticipantRole::System) => "system",
        Ok(pb::ParticipantRole::CustomBot) => "bot",
        Ok(pb::ParticipantRole::Supervisor) => "supervisor",
        _ => "",
    }
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

/// The event's time of day in UTC, or blanks for events without one.
fn clock(time: Option<&prost_types::Timestamp>) -> String {
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    time.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "        ".into())
}
