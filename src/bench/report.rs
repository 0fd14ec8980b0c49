//! What the bench measured: acknowledgements (latency histogram, statuses), replies matched to
//! their messages (end-to-end latency, lost, duplicated), and the final report as text or JSON.
//! Pure bookkeeping: no I/O but printing.

use super::cpu::{Cost, Usage};
use super::payload::Run;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Highest latency recorded, in microseconds (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds from 1 µs to [`MAX_LATENCY_US`].
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds")
}

/// The answers to the webhooks the bench posted.
pub struct Acks {
    /// Microseconds from the (scheduled) send to the full answer.
    pub latency: Histogram<u64>,
    /// Answers by HTTP status (200 included).
    pub statuses: BTreeMap<u16, u64>,
    /// POSTs that got no HTTP answer.
    pub network_errors: u64,
    /// Seqs of the messages in webhooks answered 200.
    pub acked: Vec<u64>,
    /// Messages in webhooks that got any answer or error.
    pub messages_answered: u64,
    /// Watches the number of acked messages (the drain waits on it).
    pub acked_tx: tokio::sync::watch::Sender<u64>,
}

impl Default for Acks {
    fn default() -> Self {
        Self {
            latency: histogram(),
            statuses: BTreeMap::new(),
            network_errors: 0,
            acked: Vec::new(),
            messages_answered: 0,
            acked_tx: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Acks {
    /// Records one webhook's outcome: `status` is `None` when no HTTP answer came.
    pub fn record(
        &mut self,
        seqs: impl Iterator<Item = u64>,
        status: Option<u16>,
        latency_us: u64,
    ) {
        match status {
            Some(s) => {
                *self.statuses.entry(s).or_default() += 1;
                self.latency.saturating_record(latency_us.max(1));
            }
            None => self.network_errors += 1,
        }
        if status == Some(200) {
            let before = self.acked.len();
            self.acked.extend(seqs);
            let fresh = (self.acked.len() - before) as u64;
            self.messages_answered += fresh;
            self.acked_tx.send_modify(|n| *n += fresh);
        } else {
            self.messages_answered += seqs.count() as u64;
        }
    }

    /// Webhooks answered 200.
    pub fn ok_webhooks(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }
}

/// The replies the emulator accepted, matched to this run's messages by their text.
pub struct Replies {
    run: Run,
    /// Replies per message seq.
    counts: HashMap<u64, u32>,
    /// Microseconds from the message's send to the first reply's acceptance.
    pub e2e: Histogram<u64>,
    /// Replies that carry no marker of this run (another run's, or not the bench's).
    pub foreign: u64,
    /// Watches how many distinct messages have a reply (the drain waits on it).
    pub distinct_tx: tokio::sync::watch::Sender<u64>,
}

impl Replies {
    pub fn new(run: Run) -> Self {
        Self {
            run,
            counts: HashMap::new(),
            e2e: histogram(),
            foreign: 0,
            distinct_tx: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Records a reply accepted at `accepted_ms` (unix milliseconds, the emulator's clock).
    pub fn record(&mut self, text: Option<&str>, accepted_ms: i64) {
        let Some((seq, sent_us)) = text.and_then(|t| self.run.parse_reply(t)) else {
            self.foreign += 1;
            return;
        };
        let count = self.counts.entry(seq).or_default();
        *count += 1;
        if *count == 1 {
            let accepted_us = u64::try_from(accepted_ms).unwrap_or(0) * 1000;
            // The emulator's clock has millisecond steps: a reply may seem to precede its message.
            self.e2e
                .saturating_record(accepted_us.saturating_sub(sent_us).max(1));
            self.distinct_tx.send_modify(|n| *n += 1);
        }
    }

    /// Replies received for this run's messages, duplicates included.
    pub fn total(&self) -> u64 {
        self.counts.values().map(|&c| u64::from(c)).sum()
    }

    /// `(lost, duplicated, replied_unacked)`: acked messages without a reply, messages with more
    /// than one reply, and messages replied to although their webhook was not acked.
    pub fn settle(&self, acked: &[u64]) -> (u64, u64, u64) {
        let lost = acked
            .iter()
            .filter(|s| !self.counts.contains_key(s))
            .count() as u64;
        let duplicated = self.counts.values().filter(|&&c| c > 1).count() as u64;
        let acked_set: std::collections::HashSet<u64> = acked.iter().copied().collect();
        let unacked = self
            .counts
            .keys()
            .filter(|s| !acked_set.contains(s))
            .count() as u64;
        (lost, duplicated, unacked)
    }
}

/// Percentiles of a latency distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a microsecond histogram, in `unit` microseconds (1 = µs, 1000 = ms).
    pub fn of(h: &Histogram<u64>, unit: f64) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let at = |q: f64| h.value_at_quantile(q) as f64 / unit;
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: h.max() as f64 / unit,
        }
    }
}

/// Everything the bench reports, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `open` (fixed rate) or `closed` (fixed concurrency).
    pub mode: &'static str,
    /// Where the webhooks went, in turn (the gateway's replicas).
    pub targets: Vec<String>,
    pub rate: Option<u64>,
    pub concurrency: Option<usize>,
    pub duration_secs: f64,
    pub messages_per_webhook: u32,
    pub customers: u32,
    pub numbers: usize,
    pub connections_opened: u64,
    /// Messages per second the schedule offered (open loop) or that were sent (closed loop).
    pub offered_messages_per_sec: f64,
    /// Messages acknowledged 200 per second of the load phase.
    pub acked_messages_per_sec: f64,
    /// Webhooks acknowledged 200 per second of the load phase.
    pub acked_webhooks_per_sec: f64,
    pub webhooks_sent: u64,
    pub webhooks_acked: u64,
    pub messages_sent: u64,
    pub messages_acked: u64,
    /// Ack latency in microseconds (from the scheduled send, so queueing counts).
    pub ack_latency_us: Percentiles,
    /// Answers other than 200, by status (`network` for no answer at all).
    pub non_200: BTreeMap<String, u64>,
    /// End-to-end latency in milliseconds: webhook sent → reply accepted by the emulator.
    pub e2e_latency_ms: Percentiles,
    pub replies: u64,
    /// False when every number is `enabled: false` (ingress alone): no message is owed a reply.
    pub replies_expected: bool,
    pub lost: u64,
    pub duplicated: u64,
    pub replied_unacked: u64,
    pub foreign_replies: u64,
    /// Seconds the drain waited for outstanding replies.
    pub drain_secs: f64,
    pub status_webhooks_delivered: u64,
    pub status_webhooks_failed_attempts: u64,
    pub status_webhooks_pending: u64,
    /// CPU over the load phase.
    pub cpu: Usage,
    /// The gateway's CPU and bytes written per message, from the load's start to the drain's end.
    pub cost: Cost,
    /// With `--disk-probe`: how long a 4 KiB fsync on the gateway's disk took during the load, ms.
    pub disk_fsync_ms: Option<Percentiles>,
    /// With `--pg-stats`: PostgreSQL round trips per message.
    pub postgres: Option<super::pgstats::PgStats>,
    /// No loss, no duplicate, every webhook answered 200.
    pub passed: bool,
}

/// Whether a run passed: nothing lost or duplicated and every webhook answered 200.
pub fn passed(lost: u64, duplicated: u64, non_200: &BTreeMap<String, u64>) -> bool {
    lost == 0 && duplicated == 0 && non_200.values().all(|&n| n == 0)
}

/// Non-200 answers by status, plus `network` for POSTs that got no answer.
pub fn non_200(acks: &Acks) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = acks
        .statuses
        .iter()
        .filter(|&(&s, &n)| s != 200 && n > 0)
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    if acks.network_errors > 0 {
        out.insert("network".into(), acks.network_errors);
    }
    out
}

fn ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

impl Report {
    /// The compact text report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        self.write_load(&mut s);
        self.write_latency(&mut s);
        self.write_replies(&mut s);
        self.write_cpu(&mut s);
        self.write_cost(&mut s);
        if let Some(d) = &self.disk_fsync_ms {
            let _ = writeln!(
                s,
                "  disk      4 KiB fsync every 10 ms beside the database: p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms \
                 (every durable ack waits for an fsync)",
                d.p50, d.p99, d.max
            );
        }
        if let Some(pg) = &self.postgres {
            pg.write(&mut s);
        }
        let _ = write!(
            s,
            "  result    {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        s
    }

    /// The heading and the `load` line: what was offered and what was acked.
    fn write_load(&self, s: &mut String) {
        let load = match (self.mode, self.rate, self.concurrency) {
            ("open", Some(rate), _) => format!("open loop, {rate} msg/s"),
            (_, _, Some(c)) => format!("closed loop, {c} in flight"),
            _ => self.mode.to_owned(),
        };
        let targets = match self.targets.as_slice() {
            [one] => one.clone(),
            many => format!("{} replicas: {}", many.len(), many.join(", ")),
        };
        let _ = writeln!(
            s,
            "wa-gateway bench: {load} for {:.0} s, {} msg/webhook, {} customers, {} number(s) -> {targets}",
            self.duration_secs, self.messages_per_webhook, self.customers, self.numbers,
        );
        let _ = writeln!(
            s,
            "  load      offered {:.0} msg/s; acked {:.0} msg/s ({:.0} webhooks/s); {} of {} webhooks acked; {} connections",
            self.offered_messages_per_sec,
            self.acked_messages_per_sec,
            self.acked_webhooks_per_sec,
            self.webhooks_acked,
            self.webhooks_sent,
            self.connections_opened
        );
    }

    /// The `ack`, `non-200` and `e2e` lines.
    fn write_latency(&self, s: &mut String) {
        let a = &self.ack_latency_us;
        let _ = writeln!(
            s,
            "  ack       p50 {}  p90 {}  p99 {}  max {}",
            ms(a.p50),
            ms(a.p90),
            ms(a.p99),
            ms(a.max)
        );
        let non_200 = if self.non_200.is_empty() {
            "none".to_owned()
        } else {
            self.non_200
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  non-200   {non_200}");
        let e = &self.e2e_latency_ms;
        let _ = writeln!(
            s,
            "  e2e       p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (webhook sent -> reply accepted)",
            e.p50, e.p99, e.max
        );
    }

    /// The `replies` and `statuses` lines: what came back, lost or duplicated.
    fn write_replies(&self, s: &mut String) {
        if !self.replies_expected {
            let _ = writeln!(
                s,
                "  replies   none owed: every number is `enabled: false` (ingress alone); {} received",
                self.replies
            );
        } else {
            let _ = writeln!(
                s,
                "  replies   {} received, {} lost, {} duplicated{}{} (drain {:.1} s)",
                self.replies,
                self.lost,
                self.duplicated,
                if self.replied_unacked > 0 {
                    format!(", {} to unacked webhooks", self.replied_unacked)
                } else {
                    String::new()
                },
                if self.foreign_replies > 0 {
                    format!(", {} foreign", self.foreign_replies)
                } else {
                    String::new()
                },
                self.drain_secs
            );
        }
        let _ = writeln!(
            s,
            "  statuses  {} status webhooks delivered, {} failed attempts, {} pending",
            self.status_webhooks_delivered,
            self.status_webhooks_failed_attempts,
            self.status_webhooks_pending
        );
    }

    /// The `cost` line, with `--gateway-pid`: what the gateway spent per message, and how many
    /// replies a second it kept up from the load's start to the drain's end.
    fn write_cost(&self, s: &mut String) {
        let (Some(cpu), written) = (
            self.cost.cpu_us_per_message,
            self.cost.written_bytes_per_message,
        ) else {
            return;
        };
        let written = written.map_or("?".to_owned(), |b| format!("{:.1} KiB", b / 1024.0));
        let sustained = self.replies as f64 / (self.cpu.wall_secs + self.drain_secs);
        let _ = writeln!(
            s,
            "  cost      gateway {cpu:.0} µs CPU and {written} written per message; \
             {sustained:.0} replies/s from the load's start to the drain's end"
        );
    }

    /// The `cpu` line: the bench's cores and, with `--gateway-pid`, the gateway's.
    fn write_cpu(&self, s: &mut String) {
        let c = &self.cpu;
        let percent =
            |cores: Option<f64>| cores.map_or("?".to_owned(), |g| format!("{:.0}%", g * 100.0));
        let gateway = match c.replica_cores.as_slice() {
            [] => String::new(),
            [_] => format!("; gateway {}", percent(c.gateway_cores)),
            many => format!(
                "; gateway {} ({})",
                percent(c.gateway_cores),
                many.iter()
                    .map(|r| format!("pid {} {}", r.pid, percent(r.cores)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = writeln!(
            s,
            "  cpu       bench {:.0}% of a core (load generator {:.0}%, emulator {:.0}%){gateway} over {:.1} s of load",
            c.bench_cores * 100.0,
            c.load_cores * 100.0,
            c.emulator_cores * 100.0,
            c.wall_secs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::payload::Message;

    #[test]
    fn percentiles_in_microseconds_and_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let p = Percentiles::of(&h, 1.0);
        assert!((p.p50 - 5000.0).abs() <= 5.0, "{p:?}");
        assert!((p.p90 - 9000.0).abs() <= 9.0, "{p:?}");
        assert!((p.p99 - 9900.0).abs() <= 10.0, "{p:?}");
        assert!((p.max - 10_000.0).abs() <= 10.0, "{p:?}");
        let p = Percentiles::of(&h, 1000.0);
        assert!((p.p99 - 9.9).abs() < 0.02, "{p:?}");
        assert_eq!(Percentiles::of(&histogram(), 1.0), Percentiles::default());
    }

    #[test]
    fn acks_count_statuses_and_acked_messages() {
        let mut acks = Acks::default();
        acks.record([0, 1].into_iter(), Some(200), 900);
        acks.record([2, 3].into_iter(), Some(503), 1200);
        acks.record([4, 5].into_iter(), None, 5000);
        acks.record([6, 7].into_iter(), Some(200), 1000);
        assert_eq!(acks.acked, vec![0, 1, 6, 7]);
        assert_eq!(acks.ok_webhooks(), 2);
        assert_eq!(acks.messages_answered, 8);
        assert_eq!(*acks.acked_tx.borrow(), 4);
        let non = non_200(&acks);
        assert_eq!(
            non,
            BTreeMap::from([("503".to_owned(), 1), ("network".to_owned(), 1)])
        );
        assert!(!passed(0, 0, &non));
        assert!(passed(0, 0, &BTreeMap::new()));
        assert!(!passed(1, 0, &BTreeMap::new()));
        assert!(!passed(0, 1, &BTreeMap::new()));
    }

    #[test]
    fn replies_match_lost_duplicated_and_e2e() {
        let run = Run { id: 7 };
        let msg = |seq| Message {
            seq,
            customer: 0,
            sent_us: 1_700_000_000_000_000 + seq * 1000,
        };
        let mut r = Replies::new(run);
        // 0: one reply 5 ms later; 1: two replies; 2: none; 3: reply to an unacked webhook.
        r.record(
            Some(&format!("echo: {}", run.text(&msg(0)))),
            1_700_000_000_005,
        );
        r.record(
            Some(&format!("echo: {}", run.text(&msg(1)))),
            1_700_000_000_011,
        );
        r.record(
            Some(&format!("echo: {}", run.text(&msg(1)))),
            1_700_000_000_900,
        );
        r.record(
            Some(&format!("echo: {}", run.text(&msg(3)))),
            1_700_000_000_013,
        );
        r.record(Some("echo: hello"), 1_700_000_000_013);
        r.record(None, 1_700_000_000_013);
        assert_eq!(r.settle(&[0, 1, 2]), (1, 1, 1));
        assert_eq!(r.total(), 4);
        assert_eq!(r.foreign, 2);
        assert_eq!(*r.distinct_tx.borrow(), 3);
        // The duplicate's late arrival does not count: e2e is to the first reply.
        let e2e = Percentiles::of(&r.e2e, 1000.0);
        assert!((e2e.max - 10.0).abs() < 0.05, "{e2e:?}");
        assert!((e2e.p50 - 10.0).abs() < 0.05, "{e2e:?}");
    }

    fn report(targets: &[&str], replica_cores: Vec<crate::bench::cpu::ReplicaCpu>) -> Report {
        Report {
            mode: "open",
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            rate: Some(300),
            concurrency: None,
            duration_secs: 3.0,
            messages_per_webhook: 1,
            customers: 100,
            numbers: 2,
            connections_opened: 4,
            offered_messages_per_sec: 300.0,
            acked_messages_per_sec: 300.0,
            acked_webhooks_per_sec: 300.0,
            webhooks_sent: 900,
            webhooks_acked: 900,
            messages_sent: 900,
            messages_acked: 900,
            ack_latency_us: Percentiles::default(),
            non_200: BTreeMap::new(),
            e2e_latency_ms: Percentiles::default(),
            replies: 900,
            replies_expected: true,
            lost: 0,
            duplicated: 0,
            replied_unacked: 0,
            foreign_replies: 0,
            drain_secs: 0.1,
            status_webhooks_delivered: 1800,
            status_webhooks_failed_attempts: 0,
            status_webhooks_pending: 0,
            cpu: Usage {
                gateway_cores: replica_cores.iter().map(|r| r.cores).sum(),
                replica_cores,
                wall_secs: 3.0,
                ..Usage::default()
            },
            cost: Cost::default(),
            disk_fsync_ms: None,
            postgres: None,
            passed: true,
        }
    }

    #[test]
    fn the_cost_line_shows_with_the_gateways_pid() {
        let mut r = report(&["http://127.0.0.1:1/webhook"], Vec::new());
        assert!(!r.text().contains("  cost "), "{}", r.text());
        r.cost = Cost {
            cpu_us_per_message: Some(512.4),
            written_bytes_per_message: Some(45.0 * 1024.0),
        };
        assert!(
            r.text().contains(
                "  cost      gateway 512 µs CPU and 45.0 KiB written per message; \
                 290 replies/s from the load's start to the drain's end"
            ),
            "{}",
            r.text()
        );
    }

    #[test]
    fn the_disk_line_shows_only_when_probed() {
        let mut r = report(&["http://127.0.0.1:18080/webhook"], Vec::new());
        assert!(!r.text().contains("  disk "), "{}", r.text());
        r.disk_fsync_ms = Some(Percentiles {
            p50: 0.38,
            p90: 1.0,
            p99: 41.5,
            max: 260.0,
        });
        assert!(
            r.text()
                .contains("  disk      4 KiB fsync every 10 ms beside the database: p50 0.38 ms  p99 41.50 ms  max 260.0 ms"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn the_text_names_the_targets_and_each_replicas_cpu() {
        use crate::bench::cpu::ReplicaCpu;
        let one = report(
            &["http://127.0.0.1:18080/webhook"],
            vec![ReplicaCpu {
                pid: 7,
                cores: Some(1.2),
            }],
        )
        .text();
        assert!(one.contains("-> http://127.0.0.1:18080/webhook\n"), "{one}");
        assert!(one.contains("; gateway 120% over"), "{one}");
        let three = report(
            &[
                "http://a:1/webhook",
                "http://b:2/webhook",
                "http://c:3/webhook",
            ],
            [(7, 0.5), (8, 0.25), (9, 0.25)]
                .into_iter()
                .map(|(pid, c)| ReplicaCpu {
                    pid,
                    cores: Some(c),
                })
                .collect(),
        )
        .text();
        assert!(
            three.contains(
                "-> 3 replicas: http://a:1/webhook, http://b:2/webhook, http://c:3/webhook\n"
            ),
            "{three}"
        );
        assert!(
            three.contains("; gateway 100% (pid 7 50%, pid 8 25%, pid 9 25%) over"),
            "{three}"
        );
        let none = report(&["http://a:1/webhook"], Vec::new()).text();
        assert!(!none.contains("; gateway"), "{none}");
    }
}
