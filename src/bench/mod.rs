//! `wa-gateway bench`: drives signed webhooks at a gateway and measures it (placeholder until
//! the load generator lands).

/// Arguments of `wa-gateway bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench is not built yet")
}
