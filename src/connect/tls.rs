//! TLS under a `wss://` participant socket, on rustls' unbuffered API.
//!
//! rustls' buffered connection (what tokio-rustls drives) keeps a 4 KiB receive buffer in
//! every connection for its whole life, idle or not. Here the bytes read from the socket land
//! in one buffer per thread and are decrypted from there; a connection keeps bytes of its own
//! only while they are in flight: the first part of a record not yet complete, plaintext its
//! reader has not taken yet, ciphertext the kernel has not taken yet. An idle connection holds
//! none of them.
//!
//! rustls drives the handshake and the first records after it. Once a TLS 1.3 connection has
//! received the server's first application data (after the session tickets a server sends
//! with its handshake), rustls hands over the traffic keys and its connection is dropped: the
//! records are protected from then on by [`record`], which keeps the keys alone (about 130 B
//! instead of about 4 KB). A TLS 1.2 connection stays with rustls for its life.

mod record;

use record::RecordKeys;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ClientConfig, ProtocolVersion, SupportedCipherSuite};
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
const WRITE_CHUNK: usize = record::MAX_PLAINTEXT;

/// Room for the few records a connection sends of itself (an alert, a key update), bytes.
const CONTROL_ROOM: usize = 256;

thread_local! {
    /// Where reads land on this thread; records are decrypted in place here.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A client TLS connection over TCP that keeps no buffers while idle.
pub struct TlsStream {
    tcp: TcpStream,
    conn: Conn,
    /// The configuration lets rustls hand over the traffic keys.
    may_hand_over: bool,
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

/// Who protects the connection's records.
enum Conn {
    /// rustls' whole connection: during the handshake, for TLS 1.2, and for TLS 1.3 until the
    /// server's first application data.
    Full(Box<UnbufferedClientConnection>),
    /// A TLS 1.3 connection past that point: its traffic keys alone.
    Keys(RecordKeys),
    /// The hand-over failed; the connection is unusable.
    Failed,
}

impl Conn {
    fn name(&self) -> &'static str {
        match self {
            Self::Full(_) => "rustls",
            Self::Keys(_) => "traffic keys",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("records", &self.conn.name())
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
    /// Application data arrived in this run.
    data: bool,
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
    let mut data_seen = false;
    loop {
        let UnbufferedStatus { mut discard, state } =
            conn.process_tls_records(&mut data[consumed..]);
        let step = match state.map_err(tls_error)? {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                    data_seen = true;
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
                data: data_seen,
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
        let may_hand_over = config.enable_secret_extraction;
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut s = Self {
            tcp,
            conn: Conn::Full(Box::new(conn)),
            may_hand_over,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_taken: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            peer_closed: false,
            close_queued: false,
        };
        loop {
            let step = s.process_kept(Action::Nothing)?;
            s.tcp.write_all(&s.outgoing).await?;
            s.outgoing = Vec::new();
            if s.peer_closed || step == Step::Closed {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed TLS during the handshake",
                ));
            }
            if step == Step::Traffic {
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

    /// Who protects the records: rustls or the traffic keys alone.
    #[cfg(test)]
    fn on_traffic_keys(&self) -> bool {
        matches!(self.conn, Conn::Keys(_))
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

    /// Processes the received bytes in `data` (decrypted in place) and does `action`:
    /// plaintext goes to `plaintext`, records to send to `outgoing`. Returns how many bytes of
    /// `data` are done with; the rest is a record's first part.
    fn process(&mut self, data: &mut [u8], action: Action<'_>) -> io::Result<(usize, Step)> {
        match &mut self.conn {
            Conn::Full(conn) => {
                let driven = drive(conn, data, &mut self.plaintext, &mut self.outgoing, action)?;
                self.peer_closed |= driven.peer_closed;
                if driven.data && driven.step == Step::Traffic && self.may_hand_over {
                    self.hand_over()?;
                }
                Ok((driven.consumed, driven.step))
            }
            Conn::Keys(keys) => {
                match action {
                    Action::Nothing => {}
                    Action::Encrypt(plain) => keys.seal_data(plain, &mut self.outgoing)?,
                    Action::Close => keys.seal_close_notify(&mut self.outgoing)?,
                }
                let opened = keys.open(data, &mut self.plaintext)?;
                self.peer_closed |= opened.peer_closed;
                Ok((opened.consumed, Step::Traffic))
            }
            Conn::Failed => Err(other("the connection failed")),
        }
    }

    /// Once a TLS 1.3 connection has had the server's first data, takes its traffic keys
    /// from rustls and drops the rest of rustls' connection. Anything else stays with rustls.
    fn hand_over(&mut self) -> io::Result<()> {
        self.may_hand_over = false;
        let Conn::Full(conn) = std::mem::replace(&mut self.conn, Conn::Failed) else {
            return Ok(());
        };
        let limit = match conn.negotiated_cipher_suite() {
            Some(SupportedCipherSuite::Tls13(suite))
                if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) =>
            {
                suite.common.confidentiality_limit
            }
            _ => {
                self.conn = Conn::Full(conn);
                return Ok(());
            }
        };
        // The kernel connection would answer key updates and keep later tickets; it keeps
        // the certificate chain and key schedule to do so, which is what this drops.
        let (secrets, _kernel) = (*conn)
            .dangerous_into_kernel_connection()
            .map_err(tls_error)?;
        self.conn = Conn::Keys(RecordKeys::new(secrets, limit)?);
        Ok(())
    }

    /// Processes the bytes kept from earlier reads, doing `action`.
    fn process_kept(&mut self, action: Action<'_>) -> io::Result<Step> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let processed = self.process(&mut incoming, action);
        if let Ok((consumed, _)) = processed {
            incoming.drain(..consumed);
        }
        self.incoming = incoming;
        processed.map(|(_, step)| step)
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
                let (consumed, _) = self.process(&mut buffer[..n], Action::Nothing)?;
                // A record's first part stays for the next read.
                self.incoming.extend_from_slice(&buffer[consumed..n]);
            } else {
                self.incoming.extend_from_slice(&buffer[..n]);
                self.process_kept(Action::Nothing)?;
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
        match this.process_kept(Action::Encrypt(chunk))? {
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
            this.process_kept(Action::Close)?;
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
    use rustls::HandshakeKind;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    /// A TLS server on loopback with a generated CA, and a client configuration trusting it
    /// that speaks `versions`.
    async fn server_with(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (TcpListener, tokio_rustls::TlsAcceptor, Arc<ClientConfig>) {
        let certs = crate::sim::tls::generate("127.0.0.1".parse().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(certs.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (
            listener,
            tokio_rustls::TlsAcceptor::from(certs.server),
            Arc::new(client),
        )
    }

    async fn server() -> (TcpListener, tokio_rustls::TlsAcceptor, Arc<ClientConfig>) {
        server_with(rustls::DEFAULT_VERSIONS).await
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
            // Past the server's first data, a TLS 1.3 connection keeps its traffic keys alone.
            assert!(tls.on_traffic_keys(), "after {len} bytes: {tls:?}");
        }
        closes_cleanly(tls, server).await;
    }

    #[tokio::test]
    async fn a_tls_1_2_connection_stays_with_rustls_and_carries_data() {
        let (listener, acceptor, config) = server_with(&[&rustls::version::TLS12]).await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(echo(listener, acceptor));
        let mut tls = client(addr, config).await.unwrap();
        for len in [10, 50_000] {
            let sent = pattern(len);
            tls.write_all(&sent).await.unwrap();
            let mut got = vec![0; len];
            tls.read_exact(&mut got).await.unwrap();
            assert!(got == sent, "{len} bytes came back altered");
        }
        assert!(!tls.on_traffic_keys(), "{tls:?}");
        closes_cleanly(tls, server).await;
    }

    #[tokio::test]
    async fn the_tickets_of_a_connection_on_traffic_keys_resume_the_next_one() {
        let (listener, acceptor, config) = server().await;
        let addr = listener.local_addr().unwrap();
        let (kinds, mut kinds_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                kinds.send(tls.get_ref().1.handshake_kind()).unwrap();
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.unwrap();
                tls.write_all(&byte).await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });
        for _ in 0..2 {
            let mut tls = client(addr, config.clone()).await.unwrap();
            tls.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            assert!(tls.on_traffic_keys(), "{tls:?}");
            tls.shutdown().await.unwrap();
        }
        assert_eq!(kinds_rx.recv().await.unwrap(), Some(HandshakeKind::Full));
        assert_eq!(kinds_rx.recv().await.unwrap(), Some(HandshakeKind::Resumed));
    }

    #[tokio::test]
    async fn a_key_update_from_the_server_ends_a_connection_on_traffic_keys() {
        let (listener, acceptor, config) = server().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tls.write_all(b"first").await.unwrap();
            tls.flush().await.unwrap();
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(b"second").await.unwrap();
            tls.flush().await.unwrap();
            // Wait for the client to go.
            let _ = tls.read(&mut byte).await;
        });
        let mut tls = client(addr, config).await.unwrap();
        let mut got = [0u8; 5];
        tls.read_exact(&mut got).await.unwrap();
        assert!(tls.on_traffic_keys(), "{tls:?}");
        tls.write_all(b"y").await.unwrap();
        let err = tls.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("updated its traffic keys"),
            "{err}"
        );
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
