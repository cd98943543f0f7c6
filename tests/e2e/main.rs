//! Vexil's end-to-end tests: one binary, data-driven where the domain allows.
//!
//! - `spec`: tables of flag files, contexts and expected answers (tests/spec/*.yaml);
//! - `invalid`: invalid flag repositories with their expected diagnostics (tests/invalid/*/);
//! - `hostile`: files built at run time (too large, binary, not UTF-8, symlinks out of the root);
//! - `browser`: the real browser SDKs (OpenFeature web SDK with the OFREP web provider,
//!   `unleash-proxy-client`) in headless Chromium against `vexil serve` on another origin (CORS);
//! - `cli`: the `vexil` binary as a user runs it;
//! - `delivery`: change notifications (signed webhooks, Slack) and SSE streams (`/events`,
//!   OFREP's) against `vexil serve`: failing, hanging and slow receivers, `Last-Event-ID`;
//! - `faults`: `vexil serve` against clients and sources that misbehave (issue 12): HTTP/2
//!   clients that never read, slowloris under a lowered descriptor limit, idle and ping-deaf
//!   connections, a silent git server, a damaged pack, deep and oddly named files, huge Status
//!   answers, body and context limits, the drain window, `/metrics` behind tokens;
//! - `schema`: the JSON Schema accepts the example repository and rejects broken files;
//! - `matrix`: the configuration matrix (issue 14): every operation (native gRPC, flagd and
//!   OFREP evaluations, both mirrors, Status, a commit reaching the served value) against
//!   `vexil serve` on every source (directory, local ref, `file://`, `git://`, `https://`,
//!   `ssh://`, served by git daemon, nginx and sshd started by the suite) with tokens and gRPC
//!   TLS on and off; and sources that cannot work, refused with a clear error;
//! - `mirrors`: the Flipper and Unleash mirrors, with the real Python/Ruby clients installed by
//!   the tests, and their wire contract;
//! - `flagd`: flagd's sync service with the real in-process providers (Python and Node, installed
//!   by the tests) on `flags/` and the fixture repository `tests/flagd/flags/`, across commits;
//!   the sync port's contract; `vexil export --format flagd`;
//! - `openfeature`: the real OpenFeature providers (Python flagd and OFREP, Node flagd) against
//!   `vexil serve`, installed by the tests;
//! - `props`: property tests of bucketing and of evaluation on arbitrary contexts;
//! - `reload`: sources (directory, local git ref, remote) and hot reload, on temp repositories;
//! - `remote`: remote sources as deployed: a start from the cache while the remote is down,
//!   cheap polls (one shallow ref, no fetch when it has not moved, over `git daemon`), CA files;
//! - `review`: `vexil diff` (golden outputs in tests/review/), flag tests, `--rev`, CI templates;
//! - `serve`: `vexil serve` (gRPC with a tonic client, health, reflection, auth, metrics, probes,
//!   signals) on 127.0.0.1:0;
//! - `tidy`: ARCHITECTURE.md's code map names every module (and nothing gone), and no source
//!   file is over 900 lines.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod browser;
mod cli;
mod delivery;
mod faults;
mod flagd;
mod helpers;
mod hostile;
mod invalid;
mod matrix;
mod mirrors;
mod openfeature;
mod props;
mod reload;
mod remote;
mod review;
mod schema;
mod serve;
mod spec;
mod tidy;
