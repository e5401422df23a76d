//! slotproxy: Azure App Service deployment slots for self-hosted apps.
//!
//! Data flows one way: config/API → [`control::ControlPlane`] → [`store`] →
//! [`routing::RouteTable`] → the engine ([`limits::Limited`]: [`lean`], [`edge`]). The proxy never writes
//! state; the routing table is immutable and replaced whole.

pub mod access_log;
pub mod activity;
pub mod admin;
pub mod admission;
pub mod allocator;
pub mod api;
pub mod cli;
pub mod config;
pub mod connection;
pub mod control;
pub mod demo;
pub mod drain;
pub mod edge;
pub mod grpc;
pub mod h1;
pub mod handover;
pub mod head_rewrite;
pub mod health;
pub mod idle_pool;
pub mod instance_client;
pub mod lean;
pub mod limits;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod names;
pub mod outlier;
pub mod pid_file;
pub mod policy;
pub mod proxy;
pub mod ramp;
pub mod readiness;
pub mod request_body;
pub mod request_check;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod store;
pub mod tunnel;
pub mod upstream_tls;
