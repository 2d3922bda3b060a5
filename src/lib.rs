//! `agent`: deploy small fleets over SSH, and run commands on them.
//!
//! Data flows one way:
//!
//! ```text
//! cli ──► settings ──► plan ──► deploy | job ──► session (ssh | local) ──► event ──► render
//! ```
//!
//! - [`cli`]: clap types, resolved into plain [`settings`] before any work (inventory read,
//!   keys loaded and checked, spec validated and planned).
//! - [`inventory`]: hosts from a TOML file or `--host`.
//! - [`command`]: remote commands as pure values (rendered strings, unit-tested).
//! - [`job`]: `exec` and `copy` fan-out over hosts with a semaphore; emits [`event::Event`]s.
//! - [`deploy`]: per-host deploy pipelines of bounded steps; the remote side of each step is
//!   a value from [`step`]; progress saved in the [`record`]; programs from [`artifact`].
//! - [`session`]: the `Session` trait (run a command with stdin, stream output, reach a port
//!   on the host); [`ssh`] implements it over russh with pinned host keys
//!   ([`ssh::known_hosts`]) and checked keys ([`ssh::key`]).
//! - [`render`]: the one printer (TTY bars, plain lines, NDJSON), per-host logs, summary.
//! - [`spec`]: deployment specs (roles, programs, ports, load balancer routes); the course
//!   labs' `clusters` and `inference` are built in (`remote/specs/`).
//! - [`plan`]: what a deployment does on each host, as pure data (`agent plan` prints it).
//! - [`balancer`]: the HAProxy config of the load-balancer host off AWS.
//! - [`bench`]: the course's benchmarks (a load generator; results per request, HDR
//!   percentiles, per instance); [`metrics`]: CloudWatch over a bench's window
//!   ([`aws::metrics`] asks); [`chart`] draws PNG/SVG; [`report`] writes `report.md`.
//! - [`unit`]: systemd units, environment files and run scripts for the remote programs
//!   (askama templates in `remote/templates/`).
//!
//! See ARCHITECTURE.md for the invariants.

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod aws;
mod bench;
pub mod cli;
mod commands;
mod event;
pub mod exit;
mod fleet;
mod format;
mod inventory;
mod plan;
// The one module that writes to the terminal.
#[allow(clippy::print_stdout, clippy::print_stderr)]
mod printer;
mod record;
mod resource;
mod results;
mod script;
mod shell;
mod spec;
mod transport;

pub use commands::run;
