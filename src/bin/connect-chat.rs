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
/// Type a line and Enter to send it. Commands: /typing, /transcript, /attach PATH,
/// /download ID [PATH], /end, /help.
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
                    ..Default::default()
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
            _ if line.starts_with("/attach ") => {
                let path = line["/attach ".len()..].trim();
                match attach(&mut client, &chat, path).await {
                    Ok(id) => out.line(&format!("[attachment {id} sent]")),
                    Err(e) => out.line(&format!("[not attached: {e}]")),
                }
            }
            _ if line.starts_with("/download ") => {
                let mut words = line["/download ".len()..].split_whitespace();
                let (Some(id), path) = (words.next(), words.next()) else {
                    out.line("usage: /download ATTACHMENT_ID [PATH]");
                    continue;
                };
                let path = path.unwrap_or(id);
                match download(&mut client, &chat, id, path).await {
                    Ok(n) => out.line(&format!("[saved {n} bytes to {path}]")),
                    Err(e) => out.line(&format!("[not downloaded: {e}]")),
                }
            }
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
  /attach PATH send a file (pdf, png, jpeg, txt, csv, doc(x), xls(x), ppt(x), ...; 20 MB at most)
  /download ID [PATH]
               save an attachment (by the id its line shows) to PATH, or to a file named ID
  /end         end the chat (so does Ctrl-D); Ctrl-C leaves it open to resume later
  /help        this list";

/// The MIME type Connect expects for a file, by its extension.
fn content_type_of(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "csv" => "text/csv",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "heic" => "image/heic",
        "jfif" | "jpeg" | "jpg" => "image/jpeg",
        "mov" => "video/quicktime",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "rtf" => "application/rtf",
        "txt" => "text/plain",
        "wav" => "audio/wav",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => return None,
    })
}

/// Sends the file at `path` in chunks, read as they are sent.
async fn attach(client: &mut Client, chat: &Chat, path: &str) -> Result<String, BoxError> {
    use tokio::io::AsyncReadExt;
    const CHUNK: usize = 64 * 1024;
    let path = std::path::Path::new(path);
    let content_type = content_type_of(path).ok_or(
        "Amazon Connect takes csv, doc(x), heic, jfif, jpeg/jpg, mov, mp4, pdf, png, ppt(x), rtf, txt, wav and xls(x) files",
    )?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the path names no file")?
        .to_owned();
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let start = pb::SendAttachmentRequest {
        part: Some(pb::send_attachment_request::Part::Start(
            pb::AttachmentStart {
                chat: Some(chat.chat.clone()),
                name,
                content_type: content_type.into(),
                size,
                client_token: String::new(),
            },
        )),
    };
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                let part = pb::send_attachment_request::Part::Chunk(buf.into());
                Some((pb::SendAttachmentRequest { part: Some(part) }, Some(file)))
            }
        }
    });
    use futures::StreamExt;
    let answer = client
        .send_attachment(futures::stream::iter([start]).chain(chunks))
        .await
        .map_err(|s| describe("SendAttachment failed", &s))?;
    Ok(answer.into_inner().attachment_id)
}

/// Saves an attachment to `path`, chunk by chunk; answers the bytes written.
async fn download(client: &mut Client, chat: &Chat, id: &str, path: &str) -> Result<u64, BoxError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = client
        .get_attachment(pb::GetAttachmentRequest {
            chat: Some(chat.chat.clone()),
            attachment_id: id.into(),
            ..Default::default()
        })
        .await
        .map_err(|s| describe("GetAttachment failed", &s))?
        .into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    let mut written = 0u64;
    while let Some(m) = stream
        .message()
        .await
        .map_err(|s| describe("the download broke off", &s))?
    {
        file.write_all(&m.chunk).await?;
        written += m.chunk.len() as u64;
    }
    file.flush().await?;
    Ok(written)
}

async fn resume_chat(client: &mut Client, resume: &str) -> Result<Chat, BoxError> {
    let (contact_id, chat_token) = resume
        .split_once(':')
        .filter(|(c, t)| !c.is_empty() && !t.is_empty())
        .ok_or("--resume takes CONTACT_ID:CHAT_TOKEN, as printed when the chat started")?;
    let chat = pb::ChatRef {
        contact_id: contact_id.into(),
        chat_token: chat_token.into(),
        ..Default::default()
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
                // The first stream shows what happened before it opened, too.
                from_start: true,
                ..Default::default()
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
            "{at} {who} sent an attachment: {} ({}, {}; id {})",
            a.name, a.content_type, a.status, a.attachment_id
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
        Event::ParticipantInvited(_) => format!("{at} {who} was invited"),
        Event::ParticipantActive(_) => format!("{at} {who} is active"),
        Event::ParticipantInactive(_) => format!("{at} {who} is inactive"),
        Event::ParticipantAutoDisconnected(_) => format!("{at} ← {who} was disconnected (idle)"),
        Event::DisplayNameUpdated(_) => format!("{at} {who} is the new name"),
        Event::ChatRehydrated(_) => format!("{at} [the past chat's transcript is here]"),
        Event::WorkflowCancelled(_) => format!("{at} [the contact's flow was cancelled]"),
        Event::Authentication(a) => format!(
            "{at} [authentication {}{}]",
            a.state()
                .as_str_name()
                .trim_start_matches("AUTHENTICATION_STATE_")
                .to_ascii_lowercase(),
            if a.session_id.is_empty() {
                String::new()
            } else {
                format!(", session {}", a.session_id)
            }
        ),
        Event::MessageProcessing(m) => format!(
            "{at}   [message {}: {}]",
            m.message_id,
            m.status()
                .as_str_name()
                .trim_start_matches("MESSAGE_PROCESSING_STATUS_")
                .to_ascii_lowercase()
        ),
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
