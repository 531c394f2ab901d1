//! The local Connect simulator on its own, driven through the official SDK crates and plain
//! WebSocket and HTTP clients. One binary, one module per surface.

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod load;
mod rest;
mod socket;
mod tls;
mod transcript;
