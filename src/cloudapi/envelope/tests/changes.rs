//! Changes beyond one message: statuses, echoes and other fields, several entries and numbers,
//! broken skeletons and tolerated malformed items.

use super::fixtures::{multi_envelope, other_changes, statuses_fixture};
use super::*;

#[test]
fn statuses_sent_delivered_read_failed() {
    let env = parse_value(&envelope_of(statuses_fixture())).unwrap();
    let s = &messages_of(&env).statuses;
    let kinds: Vec<_> = s.iter().map(|s| s.status.clone()).collect();
    assert_eq!(
        kinds,
        [
            StatusKind::Sent,
            StatusKind::Delivered,
            StatusKind::Read,
            StatusKind::Failed,
            StatusKind::Other("played".into())
        ]
    );
    assert_eq!(s[0].biz_opaque_callback_data.as_deref(), Some("turn-42"));
    assert_eq!(s[0].customer_key(), Some(CustomerKey(BSUID.into())));
    assert_eq!(s[0].pricing.as_ref().unwrap()["category"], "service");
    assert_eq!(
        s[0].conversation.as_ref().unwrap()["origin"]["type"],
        "service"
    );
    assert_eq!(s[1].timestamp, 1_750_263_774);
    assert_eq!(s[1].customer_key(), Some(CustomerKey("16505551234".into())));
    assert_eq!(s[3].biz_opaque_callback_data.as_deref(), Some("turn-43"));
    assert_eq!(
        s[3].errors,
        vec![ApiError {
            code: 131047,
            title: Some("Re-engagement message".into()),
            message: Some("Re-engagement message".into()),
            details: Some("More than 24 hours have passed.".into()),
        }]
    );
    assert_eq!(s[4].status.as_str(), "played");
    assert_eq!(serde_json::to_value(&s[3].status).unwrap(), json!("failed"));
}

#[test]
fn echoes_preferences_and_account_updates_are_not_messages() {
    let changes = other_changes();
    let env = parse_value(&json!({ "object": "whatsapp_business_account",
        "entry": [{ "id": "1", "changes": changes.clone() }] }))
    .unwrap();
    let c = &env.entry[0].changes;
    match &c[0].value {
        ChangeValue::Echoes(v) => {
            assert!(v.messages.is_empty());
            let [echo] = v.message_echoes.as_slice() else {
                panic!("one echo: {:?}", v.message_echoes)
            };
            assert_eq!(echo.to.as_ref().map(|w| w.as_str()), Some("16505551234"));
            assert_eq!(echo.customer_key().unwrap().as_str(), BSUID);
            assert_eq!(echo.message.id.as_str(), "wamid.E1");
            assert_eq!(echo.message.timestamp, 1750263773);
            assert_eq!(
                echo.message.raw, changes[0]["value"]["message_echoes"][0],
                "kept as Meta sent it"
            );
            assert_eq!(v.metadata.phone_number_id.as_str(), PNID);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c[1].field, "user_preferences");
    assert_eq!(c[1].value, ChangeValue::Other(changes[1]["value"].clone()));
    assert_eq!(c[2].field, "account_update");
    assert_eq!(c[2].value, ChangeValue::Other(changes[2]["value"].clone()));
}

#[test]
fn several_entries_and_changes_across_two_numbers() {
    let env = parse_value(&multi_envelope()).unwrap();
    let seen: Vec<(String, String, Vec<String>, usize)> = env
        .entry
        .iter()
        .flat_map(|e| e.changes.iter().map(move |c| (e, c)))
        .filter_map(|(e, c)| match &c.value {
            ChangeValue::Messages(v) => Some((
                e.id.0.clone(),
                v.metadata.phone_number_id.0.clone(),
                v.messages.iter().map(|m| m.id.0.clone()).collect(),
                v.statuses.len(),
            )),
            _ => None,
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (
                "waba-1".into(),
                "pnid-a".into(),
                s(&["wamid.1", "wamid.2"]),
                0
            ),
            ("waba-1".into(), "pnid-b".into(), s(&[]), 5),
            ("waba-2".into(), "pnid-b".into(), s(&["wamid.3"]), 0),
        ]
    );
    assert!(matches!(
        env.entry[1].changes[1].value,
        ChangeValue::Other(_)
    ));
}

#[test]
fn broken_skeletons_say_what_is_wrong() {
    let msg = |body: &[u8]| parse(body).unwrap_err().to_string();
    assert!(msg(b"not json").starts_with("webhook body is not JSON"));
    assert!(msg(b"{\"object\":").starts_with("webhook body is not JSON"));
    assert!(msg(b"[]").starts_with("webhook body does not have the envelope's shape"));
    assert_eq!(
        msg(br#"{"entry":[]}"#),
        "webhook body has no `object` (expected \"whatsapp_business_account\")"
    );
    assert!(msg(br#"{"object":"page","entry":[]}"#).starts_with("webhook `object` is \"page\""));
    assert_eq!(
        msg(br#"{"object":"whatsapp_business_account"}"#),
        "webhook body has no `entry` array"
    );
    assert!(
        msg(br#"{"object":"whatsapp_business_account","entry":{}}"#)
            .starts_with("webhook body does not have the envelope's shape")
    );
    let cases = [
        (json!([{ "changes": [] }]), "webhook entry[0]: has no `id`"),
        (
            json!([{ "id": "w" }]),
            "webhook entry[0]: has no `changes` array",
        ),
        (
            json!([{ "id": "w", "changes": [{ "value": {} }] }]),
            "webhook entry[0].changes[0]: has no `field`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages" }] }]),
            "webhook entry[0].changes[0]: has no `value`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages", "value": { "messages": [] } }] }]),
            "webhook entry[0].changes[0].value: has no `metadata`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages", "value": { "metadata": {} } }] }]),
            "webhook entry[0].changes[0].value.metadata: has no `phone_number_id`",
        ),
    ];
    for (entry, want) in cases {
        let body = json!({ "object": "whatsapp_business_account", "entry": entry });
        assert_eq!(parse_value(&body).unwrap_err().to_string(), want);
    }
    let mut no_id = message("text", Some(json!({ "body": "x" })));
    no_id.as_object_mut().unwrap().remove("id");
    let ok = message("text", Some(json!({ "body": "y" })));
    let err = parse_value(&envelope_of(messages_value(json!([ok, no_id])))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook entry[0].changes[0].value.messages[1]: has no `id`"
    );
    let mut st = statuses_fixture();
    st["statuses"][2].as_object_mut().unwrap().remove("status");
    let err = parse_value(&envelope_of(st)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook entry[0].changes[0].value.statuses[2]: has no `status`"
    );
}

#[test]
fn value_level_errors_and_malformed_items_are_tolerated() {
    let mut v = messages_value(json!([]));
    v["errors"] =
        json!([{ "code": 131000, "title": "Something went wrong" }, { "title": "no code" }]);
    v["contacts"] = json!([{ "wa_id": 5 }, { "wa_id": "16505551234" }]);
    let env = parse_value(&envelope_of(v)).unwrap();
    let v = messages_of(&env);
    assert_eq!(v.errors.len(), 1);
    assert_eq!(v.errors[0].code, 131000);
    assert_eq!(v.contacts.len(), 1);
}

#[test]
fn standby_messages_parse_like_messages_but_stay_apart() {
    let metadata = json!({ "display_phone_number": "15550783881", "phone_number_id": PNID });
    let env = parse_value(&json!({ "object": "whatsapp_business_account", "entry": [{
        "id": "1", "changes": [{ "field": "standby", "value": {
            "messaging_product": "whatsapp", "metadata": metadata,
            "contacts": [{ "profile": { "name": "Ana" }, "wa_id": "16505551234" }],
            "messages": [{ "from": "16505551234", "id": "wamid.S1", "timestamp": "1750263773",
                "type": "text", "text": { "body": "to the other app" } }] } }] }] }))
    .unwrap();
    match &env.entry[0].changes[0].value {
        ChangeValue::Standby(v) => {
            assert_eq!(v.metadata.phone_number_id.as_str(), PNID);
            assert_eq!(v.messages.len(), 1);
            assert_eq!(v.messages[0].id.to_string(), "wamid.S1");
        }
        other => panic!("{other:?}"),
    }
}
