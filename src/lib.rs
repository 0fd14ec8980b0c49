//! wa-gateway: connects AI agents to WhatsApp Business numbers through Meta's Cloud API.
//!
//! The modules below follow a message through the gateway, then what stands beside that path:
//!
//! ```text
//! data path   ingress → store → pipeline → policy → agent → reply → outbox → graph
//! wire format cloudapi (Meta's envelopes, content and signatures, spoken by all of them)
//! beside      config, vault, secrets · reconcile, doctor · admin · serve, cluster · app
//! tools       emulator (a Cloud API stand-in) · bench (load generation)
//! ```
//!
//! Lower modules never import higher ones: `app` wires everything and nothing imports it;
//! `serve` is what ingress, admin, pipeline and outbox share while the gateway runs.

// Meta's wire format: webhook envelopes, the text an agent sees, signatures, outbound payloads.
pub mod cloudapi;

// The data path, in order.

// The webhook listener: limits, the signature check, one durable write, the 200 to Meta.
pub mod ingress;

// SQLite or PostgreSQL behind one group-commit writer: the inbox, the outbox, the leases.
pub mod store;

// One worker per conversation turns stored messages into agent calls.
pub mod pipeline;

// What a turn and a send obey: the 24-hour window, opt-out, pacing.
pub mod policy;

// The AI agents (HTTP, OpenAI-compatible, echo) behind a breaker and retries.
pub mod agent;

// An agent's answer as WhatsApp messages: markdown, splitting.
pub mod reply;

// Sends queued replies through Graph with retries, in order per conversation.
pub mod outbox;

// The Graph API client: messages, media, number management, OAuth.
pub mod graph;

// Beside it.

// gateway.yaml: the model, validation with file:line:column, TLS files, watching.
pub mod config;

// The encryption of stored secrets under `meta.encryption_key`.
pub mod vault;

// Resolving `{ stored: NAME }` secrets from storage, and key rotation.
pub mod secrets;

// Converges Meta's setup to the file: desired, observe, plan, apply, and the loop.
pub mod reconcile;

// What every command shares: the config file argument, the Graph API a command reaches, the
// admin API's client, tables.
pub mod cli;

// Test Connection and the `doctor` command: read-only checks of a number.
pub mod doctor;

// The admin listener: API, status page, onboarding.
pub mod admin;

// What the running gateway shares: state, listeners, HTTP deadlines, TLS.
pub mod serve;

// Replica identity and leader election over PostgreSQL.
pub mod cluster;

// The top that wires everything: start, reload, shutdown.
pub mod app;

// The audit log: who did what, when, and how it ended.
pub mod audit;

// Erasing a customer on request.
pub mod customer;

// Handing a conversation to a person: pause, resume, the helpdesk notification.
pub mod handoff;

// The identifiers Meta hands out, as newtypes.
pub mod ids;

// Every metric, defined once.
pub mod metrics;

// OpenTelemetry tracing: the subscriber, the OTLP exporter a reload swaps, the trace context.
pub mod telemetry;

// Where the gateway may fetch from for an agent: public addresses only, by default.
pub mod net;

// Onboarding numbers: Embedded Signup, registration, verification.
pub mod onboard;

// Pruning old rows by `storage.retention`.
pub mod retention;

// Small text helpers shared by store and reply.
pub mod text;

// A Cloud API stand-in, built in or standalone, for tests and demos.
pub mod emulator;

// Load generation against a gateway.
pub mod bench;
