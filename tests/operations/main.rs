//! Operations: the gateway and bench as processes, the Redis store, the deployment files.
//! Needs Redis on 127.0.0.1:6379 (`operate`).

#[path = "../support/mod.rs"]
mod support;

mod bench_smoke;
mod cluster;
mod deploy;
mod operate;
mod traces;
