//! Gateway end to end: a tonic client against the gateway, the gateway against the simulator
//! through the real SDK crates. One binary, one module per area.

#[path = "../support/mod.rs"]
mod support;

mod attachments;
mod auth;
mod bots;
mod chaos;
mod console;
mod events;
mod faults;
mod fuzz;
mod gateway;
mod grpc_web;
mod limits;
mod push;
mod resume;
mod secrets;
mod start_options;
mod terminal;
mod views;
