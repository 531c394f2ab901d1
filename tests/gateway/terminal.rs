//! The terminal client (`connect-chat`) as a person uses it: attach a file, see it approved,
//! download it again, end the chat.

use crate::support::gateway::*;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn attach_and_download_from_the_terminal_client() {
    let h = Harness::start().await;
    let dir = std::env::temp_dir().join(format!("ccg-terminal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("notes.txt");
    let data: Vec<u8> = (0..150_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let saved = dir.join("back.txt");

    let mut child = Command::new(env!("CARGO_BIN_EXE_connect-chat"))
        .args(["--gateway", &format!("http://{}", h.addr), "--name", "Ada"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("connect-chat runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut until = async |want: &dyn Fn(&str) -> bool| -> String {
        loop {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no such line within the wait; seen: {seen:#?}"))
                .expect("stdout")
                .unwrap_or_else(|| panic!("connect-chat exited; seen: {seen:#?}"));
            seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    };
    until(&|l: &str| l.contains("joined")).await;
    stdin
        .write_all(format!("/attach {}\n", file.display()).as_bytes())
        .await
        .unwrap();
    let sent = until(&|l: &str| l.starts_with("[attachment ")).await;
    let id = sent
        .trim_start_matches("[attachment ")
        .trim_end_matches(" sent]")
        .to_owned();
    until(&|l: &str| l.contains("notes.txt") && l.contains("APPROVED") && l.contains(&id)).await;
    stdin
        .write_all(format!("/download {id} {}\n", saved.display()).as_bytes())
        .await
        .unwrap();
    until(&|l: &str| l.starts_with("[saved 150000 bytes")).await;
    assert!(
        std::fs::read(&saved).unwrap() == data,
        "the saved file is the sent one"
    );

    stdin.write_all(b"/attach picture.gif\n").await.unwrap();
    until(&|l: &str| l.starts_with("[not attached")).await;
    stdin.write_all(b"/end\n").await.unwrap();
    until(&|l: &str| l.contains("the chat has ended")).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
    h.stop().await;
}
