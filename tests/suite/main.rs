//! One integration-test binary (builds once): the vault, keys, crash safety,
//! interop with the `age` CLI, the command line and configuration.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod anonymous_sessions;
mod api;
mod api_create;
mod architecture;
mod architecture_tree;
mod at_rest;
mod audit;
mod browser_e2e;
mod cli;
mod compose_limits;
mod config;
mod crash;
mod dev_mailbox;
mod downloads;
mod fault;
mod hostile_sign_in;
mod inbox_cluster;
mod interop;
mod keys;
mod mail;
mod metrics;
mod multi_instance;
mod one_connection;
mod pickup;
mod pickup_mail;
mod portal_admin;
mod portal_auth;
mod portal_messages;
mod proxies;
mod query_plans;
mod replies;
mod requests;
mod roundtrip;
mod s3;
mod scan;
mod schema_parity;
mod secure_inbox;
mod shred;
mod sign_in;
mod slowloris;
mod staff;
mod support;
mod tokens_page;
mod verify_burst;
mod webhooks;
mod write_groups;
