//! What every command shares: the configuration file argument and its loading, the Graph API a
//! command talks to (the built-in emulator of a running `serve` included), the client of a
//! running gateway's admin API, and tables as the commands print them. The commands themselves
//! live with their parts (`reconcile::cli`, `onboard::cli`, `admin::cli`, `handoff::cli`, …).

use crate::config::Config;
use crate::graph::GraphClient;
use anyhow::Context;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file with its secrets resolved (`stored:` ones from storage).
pub(crate) async fn load_config(path: &Path) -> anyhow::Result<Config> {
    crate::secrets::load_resolved(path).await
}

pub(crate) async fn with_client(cfg: Config) -> anyhow::Result<(Config, GraphClient)> {
    let client = graph_for_command(&cfg).await?;
    Ok((cfg, client))
}

/// The Graph API a command talks to: `meta.graph_url`, or with `emulator` the built-in
/// emulator of the `serve` running this file (at `meta.emulator.listen`), once it answers.
pub(crate) async fn graph_for_command(cfg: &Config) -> anyhow::Result<GraphClient> {
    let base = if cfg.uses_emulator() {
        let addr = cfg.emulator_addr();
        let reached =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await;
        if !matches!(reached, Ok(Ok(_))) {
            anyhow::bail!(
                "meta.graph_url is `emulator`: the built-in emulator runs inside `serve`, and \
                 nothing answers at {addr} (meta.emulator.listen). Start the gateway on this \
                 file first (`wa-gateway serve -c FILE`), then run this command again"
            );
        }
        format!("http://{addr}")
    } else {
        cfg.meta.graph_url.clone()
    };
    Ok(GraphClient::new(
        &base,
        &cfg.meta.api_version,
        Duration::from_secs(30),
    ))
}

/// The admin listener of the gateway running this file, as a client would reach it.
pub(crate) fn admin_base(cfg: &Config) -> Option<String> {
    let mut addr: SocketAddr = cfg.listen.admin;
    if addr.port() == 0 {
        return None;
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some(format!("http://{addr}"))
}

/// The `-c`/`--config` argument of the commands with subcommands (the file's storage, secrets,
/// or the admin API of the gateway running it, as each command needs).
#[derive(clap::Args, Debug)]
pub struct ConfigFile {
    /// The configuration file.
    #[arg(
        short,
        long,
        default_value = "gateway.yaml",
        env = "WA_GATEWAY_CONFIG",
        global = true
    )]
    pub config: PathBuf,
}

/// The admin API of the running gateway, as the commands that change its state reach it.
pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
}

/// The answer's JSON, or the exit code of a refusal (already printed).
pub(crate) type Answer = Result<Value, u8>;

impl AdminClient {
    /// The admin API of the gateway running the file at `path` (its `listen.admin` and
    /// `listen.admin_token`).
    pub(crate) async fn for_file(path: &Path) -> anyhow::Result<Self> {
        let cfg = load_config(path).await?;
        Self::for_config(&cfg).with_context(|| {
            format!(
                "listen.admin in {} has port 0, so the running gateway cannot be found: give it \
                 a fixed port (e.g. 127.0.0.1:9090)",
                path.display()
            )
        })
    }

    /// The admin API of the gateway running `cfg`; `None` when `listen.admin` has port 0.
    pub(crate) fn for_config(cfg: &crate::config::Config) -> Option<Self> {
        let token = cfg
            .listen
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_owned());
        Some(Self {
            base: admin_base(cfg)?,
            token,
        })
    }

    fn http() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        let req = Self::http()?
            .post(format!("{}{path}", self.base))
            .json(&body);
        self.send(req).await
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let req = Self::http()?.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        // The audit log names a command's actions `cli`.
        req = req.header(crate::audit::CLIENT_HEADER, crate::audit::CLI);
        let res = req.send().await.with_context(|| {
            format!(
                "no gateway answers at {} (listen.admin): start it with `wa-gateway serve`",
                self.base
            )
        })?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(body));
        }
        let why = body["error"].as_str().unwrap_or("no reason given");
        eprintln!(
            "error: the gateway answered HTTP {}: {why}",
            status.as_u16()
        );
        Ok(Err(1))
    }
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let t = table(
            ["A", "BB", "C"],
            &[
                ["xxx".into(), "y".into(), "z".into()],
                ["1".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z\n1\n");
    }
}
