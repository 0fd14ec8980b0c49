//! Property tests (no panic on any bytes or JSON; unknown fields change nothing) and the fuzz
//! seeds written from the fixtures.

use super::fixtures::{everything, fixtures, multi_envelope, other_changes, statuses_fixture};
use super::*;
use proptest::prelude::*;

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "object",
            "entry",
            "id",
            "changes",
            "field",
            "value",
            "metadata",
            "phone_number_id",
            "messages",
            "statuses",
            "contacts",
            "type",
            "timestamp",
            "from",
            "text",
            "body",
            "errors",
            "code",
            "status",
            "message",
            "interactive",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys whose subtree the parser keeps as raw JSON (so extra fields there do show).
fn kept_raw(path: &[String], key: &str) -> bool {
    matches!(
        key,
        "referral"
            | "referred_product"
            | "conversation"
            | "pricing"
            | "message_echoes"
            | "product_items"
    ) || (key == "contacts" && path.iter().any(|k| k == "messages"))
}

/// Adds unknown fields to every object the parser reads field by field.
fn inject(v: &mut Value, path: &mut Vec<String>, extras: &[(String, Value)], n: &mut usize) {
    match v {
        Value::Object(o) => {
            let (k, x) = &extras[*n % extras.len()];
            *n += 1;
            o.insert(k.clone(), x.clone());
            let typed_value = matches!(
                o.get("field").and_then(Value::as_str),
                Some("messages" | "smb_message_echoes" | "standby")
            );
            for (key, child) in o.iter_mut() {
                if key == k
                    || kept_raw(path, key)
                    || (key == "value"
                        && !typed_value
                        && path.last().is_some_and(|p| p == "changes"))
                {
                    continue;
                }
                path.push(key.clone());
                inject(child, path, extras, n);
                path.pop();
            }
        }
        Value::Array(items) => {
            for item in items {
                inject(item, path, extras, n);
            }
        }
        _ => {}
    }
}

fn without_raw(mut env: Envelope) -> Envelope {
    for c in env.entry.iter_mut().flat_map(|e| e.changes.iter_mut()) {
        if let ChangeValue::Messages(v) = &mut c.value {
            for m in &mut v.messages {
                m.raw = Value::Null;
            }
        }
    }
    env
}

proptest! {
    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&body);
    }

    #[test]
    fn never_panics_on_json(v in arb_json()) {
        let _ = parse_value(&v);
        let _ = parse_value(&json!({ "object": "whatsapp_business_account", "entry": [v] }));
    }

    #[test]
    fn never_panics_on_mutated_envelopes(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut body = serde_json::to_vec(&everything()).unwrap();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = parse(&body);
    }

    #[test]
    fn any_type_object_keeps_the_envelope(kind in prop_oneof![
        prop::sample::select(vec!["text", "image", "audio", "location", "contacts",
            "interactive", "button", "reaction", "order", "system", "edit", "revoke",
            "request_welcome", "unsupported"]).prop_map(str::to_owned),
        "[a-z_]{0,10}".prop_filter("a common field", |k| !matches!(k.as_str(), "id" | "timestamp" | "type")),
    ], object in arb_json(), context in arb_json(), errors in arb_json()) {
        let mut m = message(&kind, None);
        m[kind.as_str()] = object;
        m["context"] = context;
        m["errors"] = errors;
        let env = parse_value(&envelope_of(messages_value(json!([m])))).unwrap();
        let got = &messages_of(&env).messages[0];
        prop_assert_eq!(got.type_name(), kind.as_str());
        let _ = render_text(got);
    }

    #[test]
    fn unknown_fields_change_nothing(extras in prop::collection::vec(("x_[a-z]{1,8}", arb_json()), 1..16)) {
        let plain = everything();
        let mut noisy = plain.clone();
        inject(&mut noisy, &mut Vec::new(), &extras, &mut 0);
        prop_assert_ne!(&plain, &noisy);
        let want = without_raw(parse_value(&plain).unwrap());
        let got = without_raw(parse_value(&noisy).unwrap());
        prop_assert_eq!(want, got);
    }
}

// --- fuzz seeds --------------------------------------------------------------------------

/// Every fixture envelope parses; with `WA_GATEWAY_FUZZ_SEEDS=DIR` each is also written there as
/// a seed of the `webhook` fuzz target (`fuzz/seed.sh` does this).
#[test]
fn fixtures_are_the_webhook_fuzz_seeds() {
    let mut seeds: Vec<Value> = fixtures()
        .into_iter()
        .map(|(k, o, _, _)| envelope_of(messages_value(Value::Array(vec![message(k, o)]))))
        .collect();
    seeds.push(envelope_of(statuses_fixture()));
    seeds.extend(other_changes().into_iter().map(|change| {
        json!({ "object": "whatsapp_business_account",
                "entry": [{ "id": "102290129340398", "changes": [change] }] })
    }));
    seeds.push(multi_envelope());
    seeds.push(everything());
    let dir = std::env::var_os("WA_GATEWAY_FUZZ_SEEDS").map(std::path::PathBuf::from);
    for (i, seed) in seeds.iter().enumerate() {
        let bytes = serde_json::to_vec(seed).unwrap();
        assert!(parse(&bytes).is_ok(), "seed {i} does not parse: {seed}");
        if let Some(dir) = &dir {
            // The webhook target's first byte picks how the signature header is made.
            let mut data = vec![0u8];
            data.extend_from_slice(&bytes);
            std::fs::write(dir.join(format!("fixture-{i:02}.json")), data).unwrap();
        }
    }
}
