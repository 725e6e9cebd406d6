//! The shared test harness. Test modules hold tests; what several of them
//! need lives here, once:
//!
//! - `env`: a fresh data folder and database per test (SQLite, or a new
//!   PostgreSQL database), the app opened on it, the `sealpost` binary;
//! - `files`: test data, whole-file reads and writes, the blob layout;
//! - `vault`: seal and read messages without HTTP, open age files;
//! - `db`: raw database access that gets round the app's guards;
//! - `http`: the real router on a loopback port and a cookie-keeping client;
//! - `compose`: the compose form, and a fresh pickup link for a message;
//! - `mail`: pulling links and codes out of emails; `smtp`: a real SMTP
//!   server in-process;
//! - `canaries`: planted customer data, searched for in every encoding;
//! - `cluster` (several, on one database) and `serve` (one, its output
//!   read line by line): real `sealpost serve` processes;
//! - `moto`: an S3 server; `webdriver`: Chromium.

pub mod canaries;
pub mod clamd;
pub mod cluster;
pub mod compose;
pub mod db;
pub mod env;
pub mod files;
pub mod http;
pub mod mail;
pub mod moto;
pub mod serve;
pub mod smtp;
pub mod vault;
pub mod webdriver;

/// The manual clock's start for every test that uses one (unix seconds,
/// 2027-01-15): far from any edge, and the same everywhere so times in
/// assertions read alike.
pub const START: i64 = 1_800_000_000;
