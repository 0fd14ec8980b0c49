//! Conversation rules over the wire, on SQLite and PostgreSQL: the 24-hour window checked at send
//! time, opt-out across a restart, Meta's pacing limits, reply shaping, language hints,
//! resilient agents, coalescing, and settling a crash by status webhooks.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use wa_gateway::emulator::{Fault, FaultKind};

const WAIT: Duration = Duration::from_secs(20);

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn window_closes_during_a_slow_agent(db: Db) {
    let opts = Options {
        agents: "  echo: { kind: echo, prefix: \"echo: \", delay: 3s }\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway(db, opts).await else {
        return;
    };
    // The customer's last message is 2 s short of 24 h old: the window closes while the agent thinks.
    let old = now_s() - 24 * 3600 + 2;
    t.emu.deliver_envelope(text_envelope_at(
        old,
        &[(WABA, PNID, vec![("919850000001", "wamid.LATE", "late")])],
    ));
    let url = t.storage.url.clone();
    assert!(
        wait_until(WAIT, || async {
            count(&url, "SELECT COUNT(*) FROM outbox WHERE state = 'expired'").await == 1
        })
        .await,
        "the reply must end expired"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE attempts = 0")
            .await,
        1,
        "never attempted"
    );
    assert!(t.emu.sent().is_empty(), "nothing sent outside the window");
    let metrics = t
        .http
        .get(format!("http://{}/metrics", t.gw().admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "wa_gateway_window_expired_total{{phone_number_id=\"{PNID}\"}} 1"
        )),
        "{metrics}"
    );
    t.stop().await;
}

async fn opt_out(db: Db, customer: &str, stop_word: &str) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    t.emu.customer_says(PNID, customer, "O", stop_word).await;
    assert!(
        t.emu.wait_sent(|s| !s.is_empty(), WAIT).await,
        "confirmation"
    );
    let confirmation = t.texts_to(customer);
    assert_eq!(confirmation.len(), 1);
    assert!(confirmation[0].contains("START"), "{confirmation:?}");
    // A second STOP is recorded but not answered again; ordinary messages are not answered.
    t.emu.customer_says(PNID, customer, "O", stop_word).await;
    t.emu
        .customer_says(PNID, customer, "O", "are you there?")
        .await;
    let url = t.storage.url.clone();
    assert!(
        wait_until(WAIT, || async {
            count(
                &url,
                "SELECT COUNT(*) FROM inbox WHERE state IN ('done', 'skipped')",
            )
            .await
                == 3
        })
        .await
    );
    assert_eq!(
        t.texts_to(customer).len(),
        1,
        "one confirmation, nothing else"
    );

    t.restart().await;
    t.emu
        .customer_says(PNID, customer, "O", "hello after restart")
        .await;
    let url = t.storage.url.clone();
    assert!(
        wait_until(WAIT, || async {
            count(
                &url,
                "SELECT COUNT(*) FROM inbox WHERE detail = 'customer opted out'",
            )
            .await
                == 2
        })
        .await,
        "still opted out after a restart"
    );
    assert!(t.emu.sent().is_empty(), "no reply after the restart");

    t.emu.customer_says(PNID, customer, "O", "START").await;
    t.emu.customer_says(PNID, customer, "O", "back again").await;
    assert!(t.emu.wait_sent(|s| s.len() >= 2, WAIT).await);
    let texts = t.texts_to(customer);
    assert!(texts[0].contains("Welcome back"), "{texts:?}");
    assert_eq!(texts[1], "echo: back again");
    assert_eq!(
        t.count("SELECT COUNT(*) FROM opt_out_events").await,
        2,
        "stop and resume stored"
    );
    t.stop().await;
}

async fn stop_keyword_opts_out(db: Db) {
    opt_out(db, "919860000001", "STOP").await;
}

async fn hindi_stop_keyword_opts_out(db: Db) {
    opt_out(db, "919860000002", "रोकें").await;
}

async fn throughput_limit_holds_per_number(db: Db) {
    let opts = Options {
        second_number: true,
        extra: "policies:\n  throughput_per_number: 100\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms }\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway(db, opts).await else {
        return;
    };
    let mut entries = Vec::new();
    let ids: Vec<(String, String, String)> = (0..500)
        .map(|i| {
            (
                format!("9198700{:05}", i % 100),
                format!("wamid.TP{i}"),
                format!("n1-{i}"),
            )
        })
        .collect();
    for chunk in ids.chunks(50) {
        entries.push(
            chunk
                .iter()
                .map(|(f, w, x)| (f.as_str(), w.as_str(), x.as_str()))
                .collect::<Vec<_>>(),
        );
    }
    for msgs in entries {
        t.emu.deliver_envelope(text_envelope(&[(WABA, PNID, msgs)]));
    }
    let other: Vec<(String, String, String)> = (0..20)
        .map(|i| {
            (
                format!("9198710{i:05}"),
                format!("wamid.OT{i}"),
                format!("n2-{i}"),
            )
        })
        .collect();
    t.emu.deliver_envelope(text_envelope(&[(
        WABA2,
        PNID2,
        other
            .iter()
            .map(|(f, w, x)| (f.as_str(), w.as_str(), x.as_str()))
            .collect(),
    )]));
    assert!(
        t.emu
            .wait_sent(|s| s.len() >= 520, Duration::from_secs(60))
            .await,
        "all replies"
    );
    let sent = t.emu.sent();
    let one: Vec<i64> = sent
        .iter()
        .filter(|m| m.phone_number_id == PNID)
        .map(|m| m.received_at_ms)
        .collect();
    let two: Vec<i64> = sent
        .iter()
        .filter(|m| m.phone_number_id == PNID2)
        .map(|m| m.received_at_ms)
        .collect();
    assert_eq!((one.len(), two.len()), (500, 20));
    // 100/s with a burst of 10: 500 sends need at least 4.9 s.
    let span = one.iter().max().unwrap() - one.iter().min().unwrap();
    assert!(
        span >= 4_850,
        "500 replies went out in {span} ms, faster than 100/s"
    );
    // The limiter grants 100/s with a burst of 10. Measured where Meta measures, at the
    // receiver, a one-second window may also catch sends that were granted earlier and delayed
    // on the way (queueing on loopback): 20 ms of such jitter is 2 more sends.
    for &start in &one {
        let in_slice = one
            .iter()
            .filter(|&&t| t >= start && t < start + 1000)
            .count();
        assert!(
            in_slice <= 100 + 10 + 2,
            "{in_slice} sends within one second"
        );
    }
    // The other number was not held back by the first one's limit.
    let two_done = two.iter().max().unwrap() - one.iter().min().unwrap();
    assert!(
        two_done < 2_000,
        "number two finished {two_done} ms after number one started"
    );
    t.stop().await;
}

async fn throughput_storm_is_ridden_out(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    t.emu
        .push_fault(Fault::once(FaultKind::Throughput130429).times(30));
    for i in 0..10 {
        t.emu
            .customer_says(
                PNID,
                &format!("9198800000{i:02}"),
                "S",
                &format!("storm {i}"),
            )
            .await;
    }
    assert!(
        t.emu
            .wait_sent(|s| s.len() >= 10, Duration::from_secs(60))
            .await,
        "every reply delivered"
    );
    assert_eq!(t.emu.sent().len(), 10);
    let metrics = t
        .http
        .get(format!("http://{}/metrics", t.gw().admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wa_gateway_meta_errors_total{code=\"130429\"} 30"),
        "{metrics}"
    );
    t.stop().await;
}

async fn long_markdown_reply_is_split_in_order(db: Db) {
    let mut md = String::from("# Your order history\n\n");
    let mut i = 0;
    while md.len() < 9_000 {
        md.push_str(&format!(
            "## Order {i}\n\n- **Item** `SKU-{i}` shipped to _Asha_ on time, see https://example.com/o/{i}\n- Total: *{i}.00*\n\n"
        ));
        i += 1;
    }
    let reply = md.clone();
    let agent = RecordingAgent::scripted(Arc::new(move |_| {
        (200, serde_json::json!({ "reply": reply }))
    }))
    .await;
    let opts = Options {
        agents: agent.agents_yaml(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "rec").await else {
        return;
    };
    t.emu
        .customer_says(PNID, "919890000001", "L", "history please")
        .await;
    assert!(
        t.emu.wait_sent(|s| s.len() >= 3, WAIT).await,
        "at least three parts"
    );
    let url = t.storage.url.clone();
    let parts_expected = count(&url, "SELECT COUNT(*) FROM outbox").await as usize;
    assert!(t.emu.wait_sent(|s| s.len() >= parts_expected, WAIT).await);
    let parts = t.texts_to("919890000001");
    assert_eq!(parts.len(), parts_expected);
    for p in &parts {
        assert!(
            p.chars().count() <= 4096,
            "part of {} chars",
            p.chars().count()
        );
        assert!(
            !p.contains("**") && !p.contains("##"),
            "Markdown left in a part"
        );
        assert_eq!(
            p.matches('`').count() % 2,
            0,
            "inline code split across parts"
        );
    }
    assert!(
        parts[0].starts_with("*Your order history*"),
        "{}",
        &parts[0][..40]
    );
    let joined = parts.join("\n");
    let positions: Vec<usize> = (0..i)
        .map(|n| joined.find(&format!("*Order {n}*")).expect("every heading"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "parts in order");
    assert!(joined.contains("SKU-0") && joined.contains(&format!("SKU-{}", i - 1)));
    t.stop().await;
}

async fn language_hint_reaches_the_agent(db: Db) {
    let agent = RecordingAgent::start().await;
    let opts = Options {
        agents: agent.agents_yaml(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "rec").await else {
        return;
    };
    t.emu
        .customer_says(
            PNID,
            "919891000001",
            "H",
            "मेरा ऑर्डर अभी तक नहीं आया है, कृपया मदद करें",
        )
        .await;
    t.emu
        .customer_says(
            PNID,
            "919891000002",
            "A",
            "لم يصل طلبي بعد، هل يمكنك مساعدتي من فضلك",
        )
        .await;
    assert!(wait_until(WAIT, || async { agent.count() == 2 }).await);
    let mut codes: Vec<(String, String)> = agent
        .calls()
        .iter()
        .map(|c| {
            (
                c["customer"]["wa_id"].as_str().unwrap().to_owned(),
                c["language"]["code"].as_str().unwrap_or("none").to_owned(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        vec![
            ("919891000001".into(), "hi".into()),
            ("919891000002".into(), "ar".into())
        ]
    );
    t.stop().await;
}

async fn dead_agent_gives_fallback_and_opens_breaker(db: Db) {
    // A port nobody listens on: every call fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let opts = Options {
        agents: format!("  rec: {{ kind: http, url: \"http://{dead}/reply\", timeout: 1s }}\n  echo: {{ kind: echo }}\n"),
        extra: "policies:\n  fallback_reply: { default: \"Sorry, we will get back to you.\", es: \"Lo sentimos.\" }\n  agent: { retries: 1, retry_backoff: 10ms, breaker_failures: 2, breaker_cooldown: 60s }\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "rec").await else {
        return;
    };
    for i in 0..3 {
        t.emu
            .customer_says(PNID, "919892000001", "D", &format!("anyone there {i}?"))
            .await;
    }
    assert!(t.emu.wait_sent(|s| s.len() >= 3, WAIT).await);
    assert!(
        t.texts_to("919892000001")
            .iter()
            .all(|x| x == "Sorry, we will get back to you.")
    );
    let metrics = t
        .http
        .get(format!("http://{}/metrics", t.gw().admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wa_gateway_agent_breaker_open{agent=\"rec\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wa_gateway_agent_seconds_count{agent=\"rec\",result=\"circuit_open\"} 1"),
        "{metrics}"
    );
    t.stop().await;
}

async fn quick_messages_coalesce_into_one_turn(db: Db) {
    let agent = RecordingAgent::start().await;
    let opts = Options {
        agents: agent.agents_yaml(),
        extra: "policies:\n  coalesce: 1500ms\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "rec").await else {
        return;
    };
    t.emu.deliver_envelope(text_envelope(&[(
        WABA,
        PNID,
        vec![
            ("919893000001", "wamid.Q1", "hi"),
            ("919893000001", "wamid.Q2", "I need"),
            ("919893000001", "wamid.Q3", "a refund"),
        ],
    )]));
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    assert_eq!(agent.count(), 1, "one agent turn");
    assert_eq!(agent.calls()[0]["message"]["text"], "hi\nI need\na refund");
    assert_eq!(t.texts_to("919893000001"), vec!["re: hi\nI need\na refund"]);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox WHERE state = 'done'")
            .await,
        3
    );
    t.stop().await;
}

on_both_dbs!(
    window_closes_during_a_slow_agent,
    stop_keyword_opts_out,
    hindi_stop_keyword_opts_out,
    throughput_limit_holds_per_number,
    throughput_storm_is_ridden_out,
    long_markdown_reply_is_split_in_order,
    language_hint_reaches_the_agent,
    dead_agent_gives_fallback_and_opens_breaker,
    quick_messages_coalesce_into_one_turn,
);
