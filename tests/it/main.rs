//! Integration tests against the real broker and a real PostgreSQL (one test binary, many
//! modules, to keep link times down). Start them with `scripts/test.sh`.

mod fake_http;
mod harness;

mod alerting;
mod bench;
mod codecs;
mod engine;
mod foundation;
mod kills;
mod order;
mod outage;
mod poison;
mod pollers;
mod reader;
mod secrets;
mod simulated;
mod web;
mod windows;
