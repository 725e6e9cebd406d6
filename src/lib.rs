//! Sealpost: a self-hosted secure message portal. Staff send customers
//! encrypted messages; customers get a one-time link and verify before
//! anything is decrypted.

pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod client_net;
pub mod clock;
pub mod config;
pub mod deliveries;
pub mod filetype;
pub mod flows;
pub mod idempotency;
pub mod ids;
pub mod incoming;
pub mod mail;
pub mod metrics;
pub mod paging;
pub mod pickup;
pub mod portal;
pub mod private_fs;
pub mod requests;
pub mod scan;
pub mod server;
pub mod settings;
pub mod staff;
pub mod store;
pub mod text;
pub mod tls;
pub mod vault;
pub mod web;
pub mod webhooks;
