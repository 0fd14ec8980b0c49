//! The `wa-gateway emulator` and `wa-gateway chat` commands: arguments and their runs.

use super::{EmulatorConfig, start};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `wa-gateway emulator`.
#[derive(clap::Args, Debug)]
pub struct EmulatorArgs {
    /// A gateway config whose numbers, tokens, app secret and verify token the emulator serves.
    #[arg(short, long, default_value = "gateway.yaml")]
    pub config: PathBuf,
    /// Where the emulator listens (its Graph API and control API).
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// Where signed webhooks go; defaults to the config's public_url.
    #[arg(long)]
    pub webhook_url: Option<String>,
}

/// Arguments of `wa-gateway chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The business number to write to (its phone_number_id).
    #[arg(long)]
    pub number: String,
    /// The customer's WhatsApp id (phone digits).
    #[arg(long, default_value = "15550100001")]
    pub from: String,
    /// The customer's profile name.
    #[arg(long, default_value = "Playground")]
    pub name: String,
    /// Send this one message, print the reply and exit (0: answered, 1: no answer in time).
    #[arg(long)]
    pub message: Option<String>,
    /// The emulator's address: this, else the built-in emulator's of `--config`
    /// (`meta.emulator.listen`), else http://127.0.0.1:8089.
    #[arg(long, env = "WA_GATEWAY_EMULATOR")]
    pub emulator: Option<String>,
    /// A gateway config whose built-in emulator (`meta.emulator.listen`) to write to.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// How long to wait for a reply.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs the emulator until Ctrl-C.
pub async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<u8> {
    let cfg = crate::secrets::load_resolved(&args.config).await?;
    let mut emu_cfg = EmulatorConfig::from_gateway(&cfg);
    if let Some(url) = args.webhook_url {
        emu_cfg.webhook_url = Some(url);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = start(emu_cfg, listener, shutdown.clone()).await?;
    tracing::info!(url = %handle.url(), "Cloud API emulator running; Ctrl-C stops it");
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
    handle.stopped().await;
    Ok(0)
}

/// The emulator `chat` writes to (see [`ChatArgs::emulator`]).
fn chat_emulator(args: &ChatArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.emulator {
        return Ok(url.clone());
    }
    let Some(path) = &args.config else {
        return Ok("http://127.0.0.1:8089".into());
    };
    let cfg = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !cfg.uses_emulator() {
        anyhow::bail!(
            "{}: meta.graph_url is {}, not the built-in emulator; pass --emulator URL of an \
             emulator to chat with",
            path.display(),
            cfg.meta.graph_url
        );
    }
    Ok(format!("http://{}", cfg.emulator_addr()))
}

/// Runs `chat`.
pub async fn run_chat(args: ChatArgs) -> anyhow::Result<u8> {
    let emulator = chat_emulator(&args)?;
    let code = super::chat::chat(
        &emulator,
        &args.number,
        &args.from,
        &args.name,
        args.message,
        args.timeout,
    )
    .await?;
    Ok(u8::try_from(code).unwrap_or(1))
}
