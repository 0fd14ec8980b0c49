//! The one-line summary `wa-gateway validate` prints for a configuration that loaded, and with
//! `--offline` the line saying what was not looked at.

use super::model::Config;
use super::secret::SecretSource;

/// `1 number (1 enabled), 1 agent, storage sqlite, graph emulator`.
pub fn summary(config: &Config) -> String {
    let numbers = config.numbers.len();
    let enabled = config.numbers.iter().filter(|n| n.enabled).count();
    let agents = config.agents.len();
    let storage = config
        .storage
        .url
        .split_once("://")
        .map_or("?", |(scheme, _)| match scheme {
            "postgresql" => "postgres",
            other => other,
        });
    let graph = if config.uses_emulator() {
        "emulator".to_owned()
    } else {
        // Only the host: the rest of a URL has no place in a one-line summary.
        reqwest::Url::parse(&config.meta.graph_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned())
    };
    format!(
        "{numbers} number{} ({enabled} enabled), {agents} agent{}, storage {storage}, graph {graph}",
        plural(numbers),
        plural(agents),
    )
}

/// What `validate --offline` did not look at in `config`: `not checked (--offline): 3 secrets
/// from the environment, 1 from a file, 0 stored in the database; certificate files of
/// listen.tls`.
pub fn offline_skipped(config: &Config) -> String {
    let (mut env, mut files, mut stored) = (0, 0, 0);
    for (_, secret) in config.clone().secrets_mut() {
        match secret.source() {
            SecretSource::Env(_) => env += 1,
            SecretSource::File(_) => files += 1,
            SecretSource::Stored(_) => stored += 1,
            SecretSource::Value(_) => {}
        }
    }
    let certs: Vec<&str> = [
        ("listen.tls", config.listen.tls.is_some()),
        ("listen.admin_tls", config.listen.admin_tls.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    let certs = match certs.is_empty() {
        true => "no certificate files configured".to_owned(),
        false => format!("certificate files of {}", certs.join(" and ")),
    };
    format!(
        "not checked (--offline): {env} secret{} from the environment, {files} from file{}, \
         {stored} stored in the database (storage not opened); {certs}",
        plural(env),
        plural(files),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
