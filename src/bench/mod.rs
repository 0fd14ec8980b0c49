//! `wa-gateway bench`: drives signed webhooks straight at a running gateway (one or several
//! replicas, in turn) while its own Cloud API emulator takes the replies from all of them (and
//! sends the status webhooks Meta would), then reports ack latency, throughput, end-to-end
//! latency and lost or duplicated replies.

mod client;
mod cpu;
mod disk;
mod load;
mod payload;
mod pgstats;
mod report;

use anyhow::Context;
use load::Load;
use payload::{Number, Run};
use report::{Acks, Percentiles, Replies, Report};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Arguments of `wa-gateway bench`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("load").required(true).args(["rate", "concurrency"]))]
pub struct BenchArgs {
    /// The gateway's config: the target is its `public_url`, the emulator listens at the
    /// host:port of `meta.graph_url`; numbers, tokens and the app secret come from it.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to post webhooks instead of `public_url` (plain http://host:port/webhook). Repeat
    /// it for several replicas: webhooks and status webhooks go to them in turn.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// The app secret to sign with instead of the config's.
    #[arg(long)]
    pub app_secret: Option<String>,
    /// Where the bench's emulator listens instead of `meta.graph_url`'s host:port.
    #[arg(long)]
    pub emulator_listen: Option<SocketAddr>,
    /// Open loop: messages per second, on a fixed timeline.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Closed loop: webhooks in flight, each sent as soon as the previous one is answered.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long the load lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Simulated customers; each message comes from one at random.
    #[arg(long, default_value_t = 1000)]
    pub customers: u32,
    /// Messages in one webhook POST (Meta batches some).
    #[arg(long, default_value_t = 1)]
    pub messages_per_webhook: u32,
    /// After the load, how long to wait for outstanding replies.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Most connections (and so webhooks in flight) in the open loop [default: rate/25, ≥ 64].
    #[arg(long)]
    pub connections: Option<usize>,
    /// The gateway's pid, to report its CPU use beside the bench's; repeat it for each replica.
    #[arg(long = "gateway-pid", value_name = "PID")]
    pub gateway_pids: Vec<u32>,
    /// A directory on the gateway's disk (its database's): while the load runs, fsync 4 KiB
    /// there every 10 ms and report how long the fsyncs took, the floor under a durable ack.
    #[arg(long, value_name = "DIR")]
    pub disk_probe: Option<PathBuf>,
    /// The gateway's PostgreSQL database (a postgres:// URL): reset its `pg_stat_statements`
    /// before the load and report the statements (round trips) per message after the drain,
    /// inside and outside the group commit. Needs `shared_preload_libraries =
    /// 'pg_stat_statements'` on the server; the report says so when it is not there.
    #[arg(long, value_name = "URL")]
    pub pg_stats: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What the bench needs from the config and the flags.
struct Setup {
    targets: Vec<String>,
    app_secret: String,
    emulator_listen: SocketAddr,
    emulator: crate::emulator::EmulatorConfig,
    numbers: Vec<Number>,
    /// Whether any number is enabled, so that messages get replies (otherwise the run measures
    /// ingress alone: webhooks verified and committed, no agent turn).
    answered: bool,
}

async fn setup(args: &BenchArgs) -> anyhow::Result<Setup> {
    let cfg = crate::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if cfg.meta.graph_url == "emulator" {
        anyhow::bail!(
            "{} runs the gateway's built-in emulator (meta.graph_url: emulator), so replies would \
             never reach the bench: set meta.graph_url to the bench's emulator, e.g. \
             http://127.0.0.1:18089 (see examples/bench.yaml)",
            args.config.display()
        );
    }
    let emulator_listen = match args.emulator_listen {
        Some(addr) => addr,
        None => {
            let uri: hyper::Uri =
                cfg.meta.graph_url.parse().with_context(|| {
                    format!("meta.graph_url {:?} is not a URL", cfg.meta.graph_url)
                })?;
            let host = uri.host().context("meta.graph_url names no host")?;
            let port = uri.port_u16().unwrap_or(80);
            tokio::net::lookup_host((host, port))
                .await
                .with_context(|| format!("cannot resolve {host}"))?
                .next()
                .with_context(|| format!("{host} resolves to no address"))?
        }
    };
    let targets = if args.targets.is_empty() {
        vec![cfg.public_url.clone()]
    } else {
        args.targets.clone()
    };
    let app_secret = args
        .app_secret
        .clone()
        .unwrap_or_else(|| cfg.meta.app_secret.expose().to_owned());
    let mut emulator = crate::emulator::EmulatorConfig::from_gateway(&cfg);
    emulator.webhook_url = Some(targets[0].clone());
    emulator.webhook_spread = if targets.len() > 1 {
        targets.clone()
    } else {
        Vec::new()
    };
    emulator.app_secret = app_secret.clone();
    emulator.statuses = true;
    // The numbers under load are in use, so registered at Meta: otherwise the gateway's
    // reconciler tries to register them (no PIN in the bench config) and logs an error each retry.
    emulator.preregistered = true;
    let numbers = emulator
        .numbers
        .iter()
        .map(|n| Number {
            phone_number_id: n.phone_number_id.clone(),
            waba_id: n.waba_id.clone(),
            display_phone_number: n.display_phone_number.clone(),
        })
        .collect::<Vec<_>>();
    if numbers.is_empty() {
        anyhow::bail!("{} declares no numbers to write to", args.config.display());
    }
    let answered = cfg.numbers.iter().any(|n| n.enabled);
    Ok(Setup {
        targets,
        app_secret,
        emulator_listen,
        emulator,
        numbers,
        answered,
    })
}

/// Waits until the target accepts TCP connections (the gateway may still be starting).
async fn wait_for_target(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!(
                    "the gateway at {addr} does not accept connections: {e}; is it running?"
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the benchmark; exit code 0 when nothing was lost or duplicated and every webhook got 200.
pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    if args.customers == 0 || args.messages_per_webhook == 0 {
        anyhow::bail!("--customers and --messages-per-webhook must be at least 1");
    }
    if args.rate == Some(0) || args.concurrency == Some(0) {
        anyhow::bail!("--rate and --concurrency must be at least 1");
    }
    let setup = setup(&args).await?;
    let mut targets = Vec::with_capacity(setup.targets.len());
    for url in &setup.targets {
        targets.push(client::Target::resolve(url).await?);
    }
    for target in &targets {
        wait_for_target(target.addr, Duration::from_secs(15)).await?;
    }
    let emulator = BenchEmulator::start(&setup).await?;

    let run = Run { id: rand::random() };
    let replies = Arc::new(Mutex::new(Replies::new(run)));
    let stop_reader = CancellationToken::new();
    let reader = tokio::spawn(load::read_replies(
        emulator.handle.clone(),
        replies.clone(),
        stop_reader.clone(),
    ));
    let load = Arc::new(Load {
        run,
        numbers: setup.numbers.clone(),
        customers: args.customers,
        per_webhook: args.messages_per_webhook,
        app_secret: setup.app_secret.clone().into_bytes(),
        pool: client::Pool::new(targets, max_connections(&args)),
        emulator: emulator.handle.clone(),
        acks: Mutex::new(Acks::default()),
        start: Instant::now(),
        start_unix_us: load::unix_us(),
    });
    let pg = match &args.pg_stats {
        Some(url) => Some(pgstats::Probe::start(url).await),
        None => None,
    };
    let measured = drive(&args, &load).await?;

    // Ingress alone (no number enabled): no reply is owed.
    let acked: Vec<u64> = if setup.answered {
        lock(&load.acks).acked.clone()
    } else {
        Vec::new()
    };
    let secs = drain(&replies, &emulator.handle, &acked, args.drain).await;
    let cost = cpu::Cost::between(
        &measured.cpu_before,
        &cpu::sample(&args.gateway_pids),
        lock(&load.acks).acked.len() as u64,
    );
    stop_reader.cancel();
    let _ = reader.await;
    let pg = match pg {
        Some(probe) => Some(probe.finish(acked_messages(&load)).await),
        None => None,
    };
    let drained = Drained {
        acked,
        secs,
        status: emulator.stop(),
        cost,
    };

    let mut report = build_report(&args, setup, &load, &lock(&replies), measured, drained);
    report.postgres = pg;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(if report.passed { 0 } else { 1 })
}

/// Messages acknowledged 200 so far.
fn acked_messages(load: &Load) -> u64 {
    lock(&load.acks).acked.len() as u64
}

/// Locks a mutex the bench shares; a panicked holder left plain data behind, keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bench's emulator, on threads of its own so that its CPU can be told apart from the load's.
struct BenchEmulator {
    runtime: tokio::runtime::Runtime,
    stop: CancellationToken,
    handle: crate::emulator::EmulatorHandle,
}

impl BenchEmulator {
    async fn start(setup: &Setup) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(cpu::EMULATOR_THREAD)
            .enable_all()
            .build()
            .context("starting the emulator's runtime")?;
        let stop = CancellationToken::new();
        let (listen, emu_cfg, token) =
            (setup.emulator_listen, setup.emulator.clone(), stop.clone());
        let handle = runtime
            .spawn(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
                    format!("the bench's emulator cannot listen on {listen} (meta.graph_url); is another emulator running?")
                })?;
                crate::emulator::start(emu_cfg, listener, token)
                    .await
                    .context("starting the emulator")
            })
            .await??;
        Ok(Self {
            runtime,
            stop,
            handle,
        })
    }

    /// Stops the emulator; its webhook counters as they ended.
    fn stop(self) -> crate::emulator::WebhookStats {
        let stats = self.handle.webhook_stats();
        self.stop.cancel();
        self.runtime.shutdown_background();
        stats
    }
}

/// Most connections: the closed loop's concurrency, or `--connections` [rate/25, ≥ 64].
fn max_connections(args: &BenchArgs) -> usize {
    match (args.concurrency, args.rate) {
        (Some(c), _) => c,
        (None, rate) => args
            .connections
            .unwrap_or_else(|| (rate.unwrap_or(0) / 25).max(64) as usize),
    }
}

/// What the load phase measured.
struct Measured {
    webhooks_sent: u64,
    load_secs: f64,
    cpu: cpu::Usage,
    /// The CPU and bytes-written counters when the load began.
    cpu_before: cpu::Sample,
    disk_fsync_ms: Option<Percentiles>,
}

/// Runs the load (open or closed loop) with the CPU sampled and the disk probed around it.
async fn drive(args: &BenchArgs, load: &Arc<Load>) -> anyhow::Result<Measured> {
    let probe = match &args.disk_probe {
        Some(dir) => Some(
            disk::Probe::start(dir)
                .with_context(|| format!("the disk probe cannot write in {}", dir.display()))?,
        ),
        None => None,
    };
    let cpu_before = cpu::sample(&args.gateway_pids);
    let webhooks_sent = match (args.rate, args.concurrency) {
        (Some(rate), _) => load::open_loop(load.clone(), rate, args.duration).await,
        (None, Some(c)) => load::closed_loop(load.clone(), c, args.duration).await,
        (None, None) => unreachable!("clap requires --rate or --concurrency"),
    };
    let load_secs = load.start.elapsed().as_secs_f64();
    let cpu = cpu::Usage::between(
        &cpu_before,
        &cpu::sample(&args.gateway_pids),
        &args.gateway_pids,
        load_secs,
    );
    let disk_fsync_ms = match probe {
        Some(p) => Some(Percentiles::of(
            &p.finish().context("the disk probe failed")?,
            1000.0,
        )),
        None => None,
    };
    Ok(Measured {
        webhooks_sent,
        load_secs,
        cpu,
        cpu_before,
        disk_fsync_ms,
    })
}

/// Waits, at most `within`, until every acked message has a reply and the status webhooks are
/// delivered; returns how long it waited, in seconds.
async fn drain(
    replies: &Mutex<Replies>,
    emulator: &crate::emulator::EmulatorHandle,
    acked: &[u64],
    within: Duration,
) -> f64 {
    let drain_start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let mut distinct_rx = lock(replies).distinct_tx.subscribe();
    let want = acked.len() as u64;
    let _ = tokio::time::timeout_at(deadline, distinct_rx.wait_for(|&n| n >= want)).await;
    loop {
        let (lost, _, _) = lock(replies).settle(acked);
        if lost == 0
            || tokio::time::timeout_at(deadline, distinct_rx.changed())
                .await
                .is_err()
        {
            break;
        }
    }
    while emulator.webhook_stats().pending > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drain_start.elapsed().as_secs_f64()
}

/// What the drain ended with.
struct Drained {
    /// The messages owed a reply.
    acked: Vec<u64>,
    /// How long the drain took.
    secs: f64,
    /// The emulator's webhook counters when it stopped.
    status: crate::emulator::WebhookStats,
    /// What the gateway spent per message, from the load's start to the drain's end.
    cost: cpu::Cost,
}

/// The report of a finished run.
fn build_report(
    args: &BenchArgs,
    setup: Setup,
    load: &Load,
    replies: &Replies,
    measured: Measured,
    drained: Drained,
) -> Report {
    let acks = lock(&load.acks);
    let (lost, duplicated, replied_unacked) = replies.settle(&drained.acked);
    let (drain_secs, status_stats) = (drained.secs, drained.status);
    let non_200 = report::non_200(&acks);
    let per = u64::from(args.messages_per_webhook);
    let Measured {
        webhooks_sent,
        load_secs,
        ..
    } = measured;
    Report {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        targets: setup.targets,
        rate: args.rate,
        concurrency: args.concurrency,
        duration_secs: args.duration.as_secs_f64(),
        messages_per_webhook: args.messages_per_webhook,
        customers: args.customers,
        numbers: setup.numbers.len(),
        connections_opened: load.pool.connections_opened(),
        offered_messages_per_sec: match args.rate {
            Some(rate) => rate as f64,
            None => (webhooks_sent * per) as f64 / load_secs,
        },
        acked_messages_per_sec: acks.acked.len() as f64 / load_secs,
        acked_webhooks_per_sec: acks.ok_webhooks() as f64 / load_secs,
        webhooks_sent,
        webhooks_acked: acks.ok_webhooks(),
        messages_sent: webhooks_sent * per,
        messages_acked: acks.acked.len() as u64,
        ack_latency_us: Percentiles::of(&acks.latency, 1.0),
        passed: report::passed(lost, duplicated, &non_200),
        non_200,
        e2e_latency_ms: Percentiles::of(&replies.e2e, 1000.0),
        replies: replies.total(),
        replies_expected: setup.answered,
        lost,
        duplicated,
        replied_unacked,
        foreign_replies: replies.foreign,
        drain_secs,
        status_webhooks_delivered: status_stats.delivered,
        status_webhooks_failed_attempts: status_stats.failed_attempts,
        status_webhooks_pending: status_stats.pending,
        cpu: measured.cpu,
        cost: drained.cost,
        disk_fsync_ms: measured.disk_fsync_ms,
        postgres: None,
    }
}
