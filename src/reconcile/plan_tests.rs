//! Table-driven tests of `plan`: one desired state, observed states from a fresh app to a
//! converged one, and the actions each must yield.

use super::*;
use crate::config::Secret;
use crate::graph::NumberInfo;
use crate::reconcile::desired::{DesiredNumber, DesiredWaba};
use crate::reconcile::observe::{Failure, ObservedApp, ObservedWaba};
use std::collections::{BTreeMap, BTreeSet};

const URL: &str = "https://wa.example.com/webhook";
const W1: &str = "100";
const W2: &str = "200";
const N1: &str = "11";
const N2: &str = "22";

fn number(index: usize, pnid: &str, waba: &str) -> DesiredNumber {
    DesiredNumber {
        index,
        phone_number_id: pnid.into(),
        waba_id: waba.into(),
        display_name: String::new(),
        enabled: true,
        token: Secret::inline("t"),
        pin: Some(Secret::inline("123456")),
    }
}

/// Two WABAs, one number each.
fn desired() -> Desired {
    let waba = DesiredWaba {
        override_callback: None,
        tokens: vec![Secret::inline("t")],
    };
    Desired {
        app_id: "1".into(),
        app_secret: Secret::inline("s"),
        callback_url: URL.into(),
        verify_token: Secret::inline("v"),
        fields: BTreeSet::from(["messages".to_owned()]),
        wabas: BTreeMap::from([(W1.into(), waba.clone()), (W2.into(), waba)]),
        numbers: vec![number(0, N1, W1), number(1, N2, W2)],
        retired: BTreeMap::new(),
        prune: false,
    }
}

/// W2 leaves the file with its number's token, as a reload that removed it would leave it.
fn retire_w2(d: &mut Desired) {
    let token = d.wabas.remove(&W2.into()).unwrap().tokens.swap_remove(0);
    d.retired.insert(W2.into(), token);
}

fn registered(yes: bool) -> Result<NumberInfo, Failure> {
    Ok(NumberInfo {
        platform_type: Some(if yes { "CLOUD_API" } else { "NOT_APPLICABLE" }.into()),
        status: Some(if yes { "CONNECTED" } else { "PENDING" }.into()),
        ..NumberInfo::default()
    })
}

fn subscribed(yes: bool) -> Result<ObservedWaba, Failure> {
    Ok(ObservedWaba {
        subscribed: yes,
        override_callback: None,
    })
}

/// Everything in place.
fn converged() -> Observed {
    Observed {
        app: Ok(Some(ObservedApp {
            callback_url: URL.into(),
            active: true,
            fields: BTreeSet::from(["messages".into(), "account_update".into()]),
        })),
        wabas: BTreeMap::from([(W1.into(), subscribed(true)), (W2.into(), subscribed(true))]),
        numbers: BTreeMap::from([(N1.into(), registered(true)), (N2.into(), registered(true))]),
    }
}

fn fresh() -> Observed {
    Observed {
        app: Ok(None),
        wabas: BTreeMap::from([
            (W1.into(), subscribed(false)),
            (W2.into(), subscribed(false)),
        ]),
        numbers: BTreeMap::from([
            (N1.into(), registered(false)),
            (N2.into(), registered(false)),
        ]),
    }
}

fn app_op(fields: &[&str]) -> Op {
    Op::SubscribeApp {
        callback_url: URL.into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn waba_op(w: &str) -> Op {
    Op::SubscribeWaba {
        waba_id: w.into(),
        override_callback: None,
    }
}

fn register(n: &str) -> Op {
    Op::Register {
        phone_number_id: n.into(),
    }
}

#[test]
fn plans_match_the_table() {
    type Case = (&'static str, fn(&mut Desired, &mut Observed), Vec<Op>);
    let cases: Vec<Case> = vec![
        ("converged", |_, _| {}, vec![]),
        (
            "fresh app",
            |_, o| *o = fresh(),
            vec![
                app_op(&["messages"]),
                waba_op(W1),
                waba_op(W2),
                register(N1),
                register(N2),
            ],
        ),
        (
            "wrong callback keeps other fields",
            |_, o| {
                if let Ok(Some(a)) = &mut o.app {
                    a.callback_url = "https://old.example.com/webhook".into()
                }
            },
            vec![app_op(&["account_update", "messages"])],
        ),
        (
            "missing messages field",
            |_, o| {
                if let Ok(Some(a)) = &mut o.app {
                    a.fields = BTreeSet::from(["account_update".into()])
                }
            },
            vec![app_op(&["account_update", "messages"])],
        ),
        (
            "WABA unsubscribed",
            |_, o| {
                o.wabas.insert(W2.into(), subscribed(false));
            },
            vec![waba_op(W2)],
        ),
        (
            "WABA override declared",
            |d, _| {
                d.wabas.get_mut(&W1.into()).unwrap().override_callback =
                    Some("https://x/webhook".into());
            },
            vec![Op::SubscribeWaba {
                waba_id: W1.into(),
                override_callback: Some("https://x/webhook".into()),
            }],
        ),
        (
            "number unregistered",
            |_, o| {
                o.numbers.insert(N1.into(), registered(false));
            },
            vec![register(N1)],
        ),
        (
            "disabled number is not registered",
            |d, o| {
                d.numbers[0].enabled = false;
                o.numbers.insert(N1.into(), registered(false));
            },
            vec![],
        ),
        (
            "failed reads plan nothing",
            |_, o| {
                let f = || Failure {
                    code: Some(190),
                    message: "expired".into(),
                };
                o.app = Err(f());
                o.wabas.insert(W1.into(), Err(f()));
                o.numbers.insert(N1.into(), Err(f()));
            },
            vec![],
        ),
        (
            "number removed, prune off",
            |d, _| {
                d.numbers.pop();
                retire_w2(d);
            },
            vec![],
        ),
        (
            "number removed, prune on: WABA emptied",
            |d, _| {
                d.prune = true;
                d.numbers.pop();
                retire_w2(d);
            },
            vec![Op::UnsubscribeWaba { waba_id: W2.into() }],
        ),
        (
            "prune on, retired WABA already unsubscribed",
            |d, o| {
                d.prune = true;
                d.numbers.pop();
                retire_w2(d);
                o.wabas.insert(W2.into(), subscribed(false));
            },
            vec![],
        ),
    ];
    for (name, edit, want) in cases {
        let (mut d, mut o) = (desired(), converged());
        edit(&mut d, &mut o);
        let got: Vec<Op> = plan(&d, &o).into_iter().map(|a| a.op).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn prune_keeps_a_waba_with_a_declared_number() {
    let mut d = desired();
    d.prune = true;
    d.numbers.pop(); // N2 leaves the file, W2 stays declared through a new number.
    d.numbers.push(number(1, "33", W2));
    let mut o = converged();
    o.numbers.insert("33".into(), registered(true));
    assert!(plan(&d, &o).is_empty());
}

#[test]
fn every_action_says_why() {
    for a in plan(&desired(), &fresh()) {
        assert!(!a.reason.is_empty(), "{a:?}");
        assert!(a.to_string().contains(&a.reason));
    }
}

#[test]
fn a_waba_problem_counts_toward_its_numbers_only_when_it_stops_their_messages() {
    use crate::reconcile::status::{NumberState, Statuses, derive_statuses};
    let d = desired();
    let status_of = |o: &Observed| derive_statuses(&d, o, &Statuses::new(), 1)[0].clone();
    let mut o = converged();
    // No token of the WABA could read its subscriptions: shown, not charged.
    o.wabas.insert(
        W1.into(),
        Err(Failure {
            code: Some(190),
            message: "expired".into(),
        }),
    );
    let s = status_of(&o);
    assert_eq!(s.status, NumberState::Active, "{s:?}");
    assert!(s.waba_problem.as_deref().unwrap_or_default().contains(W1));
    // Not subscribed: no webhooks come, so the number cannot receive messages.
    o.wabas.insert(W1.into(), subscribed(false));
    let s = status_of(&o);
    assert_eq!(s.status, NumberState::Error, "{s:?}");
    assert_eq!(s.reason, s.waba_problem);
    assert_eq!(
        derive_statuses(&d, &o, &Statuses::new(), 1)[1].status,
        NumberState::Active,
        "the other WABA's number"
    );
}
