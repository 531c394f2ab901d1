//! The one harness of the three test binaries (`gateway`, `simulator`, `operations`), each of
//! which includes it with `#[path = "../support/mod.rs"] mod support;`.
//!
//! Here: the one bound on every wait ([`WAIT`]), the state-polling waits ([`wait_for`],
//! [`stays_for`]; never a bare sleep) and a minimal HTTP client. [`gateway`] starts a
//! simulator and a gateway in process; [`sim`] drives a simulator alone through the official
//! SDK crates and plain sockets. Both re-export the shared items, so a test module needs one
//! glob import.
#![allow(dead_code)]

pub mod chaos;
pub mod gateway;
pub mod procs;
pub mod sim;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for any one expected thing before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Waits until `cond` holds, polling state every few milliseconds; panics naming `what`
/// after [`WAIT`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether `cond` holds throughout `window` (polling state); for negative checks only.
pub async fn stays_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        if !cond() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cond()
}

/// The sum of the samples whose series is `series` (all its label sets) in a Prometheus
/// text page.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(series) && matches!(l.as_bytes().get(series.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http(addr, "GET", path, &[], b"").await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A minimal HTTP/1.1 exchange (Connection: close) for the admin API and attachment URLs.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}
