//! Signature check plus envelope parse: what an unauthenticated POST /webhook reaches.
//! The first byte picks how the signature header is made (absent, Meta's own, mangled); a body
//! signed with the key must verify, and a parse must never panic whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_gateway::cloudapi::{content, envelope, signature};

const SECRET: &[u8] = b"fuzz-app-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let signed = signature::sign(SECRET, body);
    match mode % 3 {
        0 => assert!(signature::verify(SECRET, Some(signed.as_bytes()), body).is_ok()),
        1 => assert!(signature::verify(SECRET, None, body).is_err()),
        _ => {
            // The body's own bytes as the header: refused unless they are the right signature.
            let ok = signature::verify(SECRET, Some(body), body).is_ok();
            assert_eq!(ok, body == signed.as_bytes());
        }
    }
    if let Ok(env) = envelope::parse(body) {
        // What the ingress reads of a parsed envelope must not panic either.
        for entry in &env.entry {
            for change in &entry.changes {
                if let envelope::ChangeValue::Messages(v) = &change.value {
                    for m in &v.messages {
                        let _ = (
                            m.type_name(),
                            content::render_text(m),
                            m.customer_key(&v.contacts),
                        );
                    }
                }
            }
        }
    }
});
