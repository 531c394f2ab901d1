//! TLS under a `wss://` participant socket, on rustls' unbuffered API.
//!
//! rustls' buffered connection (what tokio-rustls drives) keeps a 4 KiB receive buffer in
//! every connection for its whole life, idle or not. Here the bytes read from the socket land
//! in one buffer per thread and are decrypted from there; a connection keeps bytes of its own
//! only while they are in flight: the first part of a record not yet complete, plaintext its
//! reader has not taken yet, ciphertext the kernel has not taken yet. An idle connection holds
//! none of them.

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ClientConfig;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes one read from the socket takes: the largest TLS record (16 KiB of payload, 2 KiB
/// of expansion, the 5-byte header).
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;

/// Most plaintext one write encrypts: one record's worth.
const WRITE_CHUNK: usize = 16 * 1024;

/// Room for the few records a connection sends of itself (an alert, a key update), bytes.
const CONTROL_ROOM: usize = 256;

thread_local! {
    /// Where reads land on this thread; records are decrypted in place here.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A client TLS connection over TCP that keeps no buffers while idle.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// Received bytes not yet decrypted: the first part of a record. Empty between records.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plaintext_taken` on.
    plaintext: Vec<u8>,
    plaintext_taken: usize,
    /// Encrypted bytes the socket has not taken yet, from `outgoing_sent` on.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// The server sent its close_notify: reads end there.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("incoming", &self.incoming.len())
            .field("plaintext", &(self.plaintext.len() - self.plaintext_taken))
            .field("outgoing", &(self.outgoing.len() - self.outgoing_sent))
            .finish()
    }
}

/// What a run of the connection's state machine ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It needs more bytes from the server: mid-handshake.
    Blocked,
    /// Application data may flow; every complete record given was processed.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

/// What to do once application data may flow.
#[derive(Clone, Copy)]
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    Close,
}

struct Driven {
    /// Bytes of the input that are done with and must be dropped from its front.
    consumed: usize,
    step: Step,
    /// The server's close_notify arrived in this run.
    peer_closed: bool,
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Appends what `write` writes to `out`: first into `guess` bytes of room, then, if it asks
/// for more, into exactly what it asked for.
fn append<E>(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
    describe: impl Fn(E) -> io::Error,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match write(&mut out[start..]) {
        Ok(n) => n,
        Err(err) => match required(&err) {
            Some(size) => {
                out.resize(start + size, 0);
                match write(&mut out[start..]) {
                    Ok(n) => n,
                    Err(err) => {
                        out.truncate(start);
                        return Err(describe(err));
                    }
                }
            }
            None => {
                out.truncate(start);
                return Err(describe(err));
            }
        },
    };
    out.truncate(start + written);
    Ok(())
}

fn encode_required(err: &EncodeError) -> Option<usize> {
    match err {
        EncodeError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    }
}

fn encrypt_required(err: &EncryptError) -> Option<usize> {
    match err {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    }
}

fn other(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("TLS: {err}"))
}

/// Runs the state machine over `data` (received bytes, decrypted in place) until it needs
/// more of them: plaintext goes to `plaintext`, records to send to `outgoing`, and `action`
/// is done once application data may flow.
fn drive(
    conn: &mut UnbufferedClientConnection,
    data: &mut [u8],
    plaintext: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    action: Action<'_>,
) -> io::Result<Driven> {
    let mut consumed = 0;
    let mut peer_closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } =
            conn.process_tls_records(&mut data[consumed..]);
        let step = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append(
                    outgoing,
                    CONTROL_ROOM,
                    |buf| encode.encode(buf),
                    encode_required,
                    other,
                )?;
                None
            }
            // What was encoded is in `outgoing`, which the caller writes out before it waits
            // for the server.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                None
            }
            ConnectionState::PeerClosed => {
                peer_closed = true;
                None
            }
            ConnectionState::WriteTraffic(mut traffic) => {
                match action {
                    Action::Nothing => {}
                    Action::Encrypt(plain) => append(
                        outgoing,
                        plain.len() + CONTROL_ROOM,
                        |buf| traffic.encrypt(plain, buf),
                        encrypt_required,
                        other,
                    )?,
                    Action::Close => append(
                        outgoing,
                        CONTROL_ROOM,
                        |buf| traffic.queue_close_notify(buf),
                        encrypt_required,
                        other,
                    )?,
                }
                Some(Step::Traffic)
            }
            ConnectionState::BlockedHandshake => Some(Step::Blocked),
            ConnectionState::Closed => Some(Step::Closed),
            state => return Err(other(format!("unexpected state {state:?}"))),
        };
        consumed += discard;
        if let Some(step) = step {
            return Ok(Driven {
                consumed,
                step,
                peer_closed,
            });
        }
    }
}

impl TlsStream {
    /// Completes a TLS handshake with `host` over `tcp`.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        host: &str,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid TLS server name"))?;
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = Self {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_taken: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            peer_closed: false,
            close_queued: false,
        };
        loop {
            let driven = drive(
                &mut s.conn,
                &mut s.incoming,
                &mut s.plaintext,
                &mut s.outgoing,
                Action::Nothing,
            )?;
            s.incoming.drain(..driven.consumed);
            s.tcp.write_all(&s.outgoing).await?;
            s.outgoing = Vec::new();
            if driven.peer_closed || driven.step == Step::Closed {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed TLS during the handshake",
                ));
            }
            if driven.step == Step::Traffic {
                break;
            }
            s.incoming.reserve(4096);
            if s.tcp.read_buf(&mut s.incoming).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ));
            }
        }
        // The handshake's flights are done with; what is left is at most a record's start.
        s.incoming.shrink_to_fit();
        Ok(s)
    }

    /// Writes `outgoing` out; frees it once the socket took all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let n = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_sent += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.outgoing_sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Runs the state machine over the bytes kept from earlier reads, doing `action`.
    fn drive_kept(&mut self, action: Action<'_>) -> io::Result<Step> {
        let driven = drive(
            &mut self.conn,
            &mut self.incoming,
            &mut self.plaintext,
            &mut self.outgoing,
            action,
        )?;
        self.incoming.drain(..driven.consumed);
        self.peer_closed |= driven.peer_closed;
        Ok(driven.step)
    }

    /// Reads once from the socket and decrypts what came.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        READ_BUFFER.with_borrow_mut(|buffer| {
            if buffer.len() < READ_CHUNK {
                buffer.resize(READ_CHUNK, 0);
            }
            let n = {
                let mut read = ReadBuf::new(&mut buffer[..]);
                ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut read))?;
                read.filled().len()
            };
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without a TLS close_notify",
                )));
            }
            if self.incoming.is_empty() {
                let driven = drive(
                    &mut self.conn,
                    &mut buffer[..n],
                    &mut self.plaintext,
                    &mut self.outgoing,
                    Action::Nothing,
                )?;
                self.peer_closed |= driven.peer_closed;
                // A record's first part stays for the next read, as rustls left it.
                self.incoming.extend_from_slice(&buffer[driven.consumed..n]);
            } else {
                self.incoming.extend_from_slice(&buffer[..n]);
                self.drive_kept(Action::Nothing)?;
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let left = &this.plaintext[this.plaintext_taken..];
            if !left.is_empty() {
                let n = left.len().min(buf.remaining());
                buf.put_slice(&left[..n]);
                this.plaintext_taken += n;
                if this.plaintext_taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // What the records asked to send (a key update's answer, an alert) leaves first;
            // a socket that cannot take it now does not hold up reading.
            if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                return Poll::Ready(Err(err));
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let chunk = &buf[..buf.len().min(WRITE_CHUNK)];
        match this.drive_kept(Action::Encrypt(chunk))? {
            Step::Traffic => {}
            Step::Blocked => return Poll::Ready(Err(other("handshake not complete"))),
            Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        // The plaintext is taken once encrypted; the socket takes the ciphertext as it can.
        if let Poll::Ready(Err(err)) = this.poll_send(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            this.drive_kept(Action::Close)?;
            this.close_queued = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    /// A TLS server on loopback with a generated CA, and a client configuration trusting it.
    async fn server() -> (TcpListener, tokio_rustls::TlsAcceptor, Arc<ClientConfig>) {
        let certs = crate::sim::tls::generate("127.0.0.1".parse().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (
            listener,
            tokio_rustls::TlsAcceptor::from(certs.server),
            Arc::new(client),
        )
    }

    async fn client(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
        let tcp = TcpStream::connect(addr).await?;
        TlsStream::connect(tcp, config, "127.0.0.1").await
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn holds_nothing(s: &TlsStream) -> bool {
        s.incoming.capacity() == 0 && s.plaintext.capacity() == 0 && s.outgoing.capacity() == 0
    }

    /// Echoes every byte back until the client closes, then closes with close_notify.
    async fn echo(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let (mut r, mut w) = tokio::io::split(tls);
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    }

    /// Our close_notify reaches the echo server, whose own then ends our reads with nothing
    /// more.
    async fn closes_cleanly(mut tls: TlsStream, server: tokio::task::JoinHandle<()>) {
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn data_both_ways_arrives_whole_and_an_idle_stream_holds_no_buffer() {
        let (listener, acceptor, config) = server().await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(echo(listener, acceptor));
        let mut tls = client(addr, config).await.unwrap();
        // Small writes, then one of several records each way.
        for len in [1, 100, 5_000, 100_000] {
            let sent = pattern(len);
            tls.write_all(&sent).await.unwrap();
            tls.flush().await.unwrap();
            let mut got = vec![0; len];
            tls.read_exact(&mut got).await.unwrap();
            assert!(got == sent, "{len} bytes came back altered");
            assert!(holds_nothing(&tls), "after {len} bytes: {tls:?}");
        }
        closes_cleanly(tls, server).await;
    }

    #[tokio::test]
    async fn records_that_arrive_a_few_bytes_at_a_time_are_joined() {
        let (listener, acceptor, config) = server().await;
        let tls_addr = listener.local_addr().unwrap();
        let server = tokio::spawn(echo(listener, acceptor));
        // A relay that hands the server's bytes on three at a time.
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = relay.local_addr().unwrap();
        tokio::spawn(async move {
            let (client, _) = relay.accept().await.unwrap();
            let upstream = TcpStream::connect(tls_addr).await.unwrap();
            client.set_nodelay(true).unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut cr, &mut uw).await });
            let mut buf = [0u8; 3];
            loop {
                let n = ur.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = cw.shutdown().await;
        });
        let mut tls = client(addr, config).await.unwrap();
        let sent = pattern(40_000);
        tls.write_all(&sent).await.unwrap();
        let mut got = vec![0; sent.len()];
        tls.read_exact(&mut got).await.unwrap();
        assert!(got == sent, "the relayed bytes came back altered");
        closes_cleanly(tls, server).await;
    }

    #[tokio::test]
    async fn a_server_that_drops_the_connection_without_close_notify_is_an_error() {
        let (listener, acceptor, config) = server().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tls.write_all(b"partial").await.unwrap();
            tls.flush().await.unwrap();
            // The TCP connection ends; TLS never says so.
            let (tcp, _) = tls.into_inner();
            drop(tcp);
        });
        let mut tls = client(addr, config).await.unwrap();
        let mut got = [0u8; 7];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"partial");
        let err = tls.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn an_untrusted_server_fails_the_handshake() {
        let (listener, acceptor, _) = server().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let web_roots_only = crate::security::tls::socket_client_config(None).unwrap();
        let err = client(addr, web_roots_only).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
