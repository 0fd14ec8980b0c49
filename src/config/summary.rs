//! The one-line summary `wa-gateway validate` prints for a configuration that loaded.

use super::model::Config;

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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
