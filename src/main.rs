//! The `wa-gateway` command line: serve, validate, schema, plan, apply, status,
//! test-connection, doctor, signup, number, secret, customer, conversation, dead-letters,
//! replies, emulator, chat, bench.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use wa_gateway::config;

// `--no-default-features` keeps the system allocator, whose malloc heap profilers such as
// heaptrack and valgrind wrap (examples/bench-numbers.sh says how the per-number heap is read).
#[cfg(all(not(target_env = "msvc"), feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "wa-gateway",
    version,
    about = "Connects AI agents to WhatsApp Business numbers through Meta's Cloud API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0 with a summary, or 1 with every error (file:line:column);
    /// `--offline` checks the file alone (no secrets, certificates or storage).
    Validate(wa_gateway::doctor::validate::ValidateArgs),
    /// Print the JSON Schema of the configuration file, or with `--agent` the OpenAPI document
    /// of the `http` agent API (the request each turn sends and the answers it reads).
    Schema {
        /// The agent API instead of the configuration file.
        #[arg(long)]
        agent: bool,
    },
    /// Show what `apply` would change at Meta: exit 0 when nothing, 2 when changes are pending, 1 on error.
    Plan {
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Make Meta's setup match the file (webhook subscription, WABA subscriptions, registration).
    Apply {
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Print each number's status (from the running gateway, else from Meta): exit 1 when one is in error.
    Status {
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Test one number: token, registration, WABA subscription, callback, a signed test event
    /// through public_url, and its agent; exit 1 when a check fails.
    TestConnection {
        /// The number's phone_number_id.
        phone_number_id: String,
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Test Connection for every enabled number, as a table: exit 1 when any check fails.
    Doctor {
        /// The configuration file.
        #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Exchange an Embedded Signup code: store the token encrypted and print the YAML to add.
    Signup(wa_gateway::onboard::cli::SignupArgs),
    /// Verify and register a number: request-code, verify-code, register (with its PIN).
    Number(wa_gateway::onboard::cli::NumberArgs),
    /// Secrets kept encrypted in storage for `{ stored: NAME }`: put, list.
    Secret(wa_gateway::onboard::cli::SecretArgs),
    /// A customer's stored data: erase (GDPR Art. 17) on every number.
    Customer(wa_gateway::customer::CustomerArgs),
    /// Hand a conversation to a person and back: pause, resume, list (through the running gateway).
    Conversation(wa_gateway::handoff::cli::ConversationArgs),
    /// Signed webhook bodies that were not a Cloud API envelope: list, show, replay (through
    /// the running gateway).
    DeadLetters(wa_gateway::admin::cli::DeadLettersArgs),
    /// Replies that failed or expired: list, retry inside the 24-hour window (through the
    /// running gateway).
    Replies(wa_gateway::admin::cli::RepliesArgs),
    /// Run the Cloud API emulator on its own.
    Emulator(wa_gateway::emulator::cli::EmulatorArgs),
    /// Be a customer in the terminal: write to a number through the emulator and see the replies.
    Chat(wa_gateway::emulator::cli::ChatArgs),
    /// Drive signed webhooks at a gateway and measure acknowledgements and replies.
    Bench(wa_gateway::bench::BenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WA_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // JSON lines unless a person reads them; the OpenTelemetry layer waits for `telemetry.otlp`.
    let json = !std::io::stderr().is_terminal();
    let _ = wa_gateway::telemetry::init_subscriber(json, filter);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // No log output: every finding is printed as a diagnostic, warnings included.
        Command::Validate(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_or(ExitCode::from(1), |rt| {
                ExitCode::from(rt.block_on(wa_gateway::doctor::validate::run(args)))
            }),
        Command::Schema { agent } => {
            let schema = if agent {
                wa_gateway::agent::schema::openapi()
            } else {
                config::json_schema()
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serialises")
            );
            ExitCode::SUCCESS
        }
        command => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime starts");
            match rt.block_on(run(command)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Serve { config: path } => {
            let gateway = wa_gateway::app::Gateway::start_from(&path)
                .await
                .context("starting the gateway")?;
            wait_for_signal(&gateway).await;
            gateway.terminate().await;
            Ok(0)
        }
        Command::Plan { config } => wa_gateway::reconcile::cli::run_plan(&config).await,
        Command::Apply { config } => wa_gateway::reconcile::cli::run_apply(&config).await,
        Command::Status { config } => wa_gateway::reconcile::cli::run_status(&config).await,
        Command::TestConnection {
            phone_number_id,
            config,
        } => wa_gateway::doctor::cli::run_test_connection(&config, &phone_number_id).await,
        Command::Doctor { config } => wa_gateway::doctor::cli::run_doctor(&config).await,
        Command::Signup(args) => wa_gateway::onboard::cli::run_signup(args).await,
        Command::Number(args) => wa_gateway::onboard::cli::run_number(args).await,
        Command::Secret(args) => wa_gateway::onboard::cli::run_secret(args).await,
        Command::Customer(args) => wa_gateway::customer::run(args).await,
        Command::Conversation(args) => wa_gateway::handoff::cli::run(args).await,
        Command::DeadLetters(args) => wa_gateway::admin::cli::run_dead_letters(args).await,
        Command::Replies(args) => wa_gateway::admin::cli::run_replies(args).await,
        Command::Emulator(args) => wa_gateway::emulator::cli::run_emulator(args).await,
        Command::Chat(args) => wa_gateway::emulator::cli::run_chat(args).await,
        Command::Bench(args) => wa_gateway::bench::run(args).await,
        Command::Validate(_) | Command::Schema { .. } => {
            unreachable!("handled without a runtime")
        }
    }
}

/// Waits for SIGTERM or Ctrl-C; SIGHUP reloads the configuration through the watcher's path.
async fn wait_for_signal(gateway: &wa_gateway::app::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged and counted by the reload itself.
                    let _ = gateway.reload_now().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = gateway;
        let _ = tokio::signal::ctrl_c().await;
    }
}
