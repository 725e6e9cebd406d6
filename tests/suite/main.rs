//! One integration-test binary (builds once): the vault, keys, crash safety,
//! interop with the `age` CLI, the command line and configuration.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod at_rest;
mod audit;
mod browser;
mod browser_e2e;
mod cli;
mod cluster;
mod common;
mod config;
mod crash;
mod fault;
mod interop;
mod keys;
mod mail;
mod metrics;
mod multi_instance;
mod pickup;
mod pickup_mail;
mod portal_admin;
mod portal_auth;
mod portal_messages;
mod proxies;
mod roundtrip;
mod s3;
mod shred;
mod sign_in;
mod smtp;
mod staff;
mod webdriver;
